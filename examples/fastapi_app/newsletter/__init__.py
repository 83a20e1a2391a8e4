"""A small FastAPI newsletter: subscribers, and jobs that welcome them."""
