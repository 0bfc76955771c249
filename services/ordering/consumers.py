"""Events ordering reacts to: catalog's (what is on sale), auth's (who to write to), resale's
(listings and sales)."""

from __future__ import annotations

from services.kernel.consumer import Handler
from services.ordering import projections as p
from services.ordering import reactions as r

HANDLERS: dict[str, Handler] = {
    "catalog.EventCreated": p.on_event_saved,
    "catalog.EventUpdated": p.on_event_saved,
    "catalog.EventApproved": p.on_event_approved,
    "catalog.EventRejected": p.on_event_rejected,
    "catalog.EventCancelled": r.on_event_cancelled,
    "catalog.LocationUpdated": p.on_location_updated,
    "catalog.TicketTypeCreated": p.on_ticket_type_saved,
    "catalog.TicketTypeUpdated": p.on_ticket_type_saved,
    "catalog.TicketTypeDeleted": r.on_ticket_type_deleted,
    "catalog.ParticipantsNotified": r.on_participants_notified,
    "auth.UserRegistered": p.on_user_registered,
    "auth.UserProfileUpdated": p.on_profile_updated,
    "resale.ListingCreated": p.on_listing_saved,
    "resale.ListingRepriced": p.on_listing_saved,
    "resale.ListingCancelled": p.on_listing_cancelled,
    "resale.ListingSold": r.on_listing_sold,
}
