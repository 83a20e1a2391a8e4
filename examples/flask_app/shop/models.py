"""The shop's own tables, managed by Flask-SQLAlchemy."""

from __future__ import annotations

import datetime

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import DateTime, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Order(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "shop_orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    item: Mapped[str] = mapped_column(String(100))
    #: Set by the send_confirmation job.
    confirmed_at: Mapped[datetime.datetime | None] = mapped_column(DateTime(timezone=True))
    #: Counted by the send_reminder job.
    reminders: Mapped[int] = mapped_column(default=0)
    #: Set by ``POST /orders/<id>/checkout``, in the transaction that defers the workflow.
    checked_out_at: Mapped[datetime.datetime | None] = mapped_column(DateTime(timezone=True))
    #: Set by the checkout workflow's steps, one column each.
    charge_id: Mapped[str | None] = mapped_column(String(40))
    tracking_number: Mapped[str | None] = mapped_column(String(40))
    receipt_sent_at: Mapped[datetime.datetime | None] = mapped_column(DateTime(timezone=True))
    summary: Mapped[str | None] = mapped_column(String(200))

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "item": self.item,
            "confirmed_at": self.confirmed_at.isoformat() if self.confirmed_at else None,
            "reminders": self.reminders,
            "checked_out_at": self.checked_out_at.isoformat() if self.checked_out_at else None,
            "charge_id": self.charge_id,
            "tracking_number": self.tracking_number,
            "receipt_sent_at": self.receipt_sent_at.isoformat() if self.receipt_sent_at else None,
            "summary": self.summary,
        }
