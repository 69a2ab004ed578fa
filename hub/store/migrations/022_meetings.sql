-- 022_meetings: the meetings process (issue 14, hub/processes/meetings.py). What the hub knows of video
-- conferences booked through it: the booking, the rooms and terminals it holds, the venues' attendance.
--
-- The register of rooms and terminals is decided by PostgreSQL, not by Python: meeting_slots has an EXCLUSION
-- CONSTRAINT (btree_gist) over (resource =, slot &&) for the slots still held, so two bookings of the same room
-- (same agency, same room name) or the same terminal number in overlapping [start, end) slots can never both be
-- held — whichever transaction commits first keeps the slot, the other gets SQLSTATE 23P01 (exclusion_violation)
-- and the booking is refused (MEETING_SLOT_TAKEN), even with several engines on several hub instances racing.
CREATE EXTENSION IF NOT EXISTS btree_gist;

-- One row per meeting.booking the hub accepted. state: booked (its slots are held), refused (the hub refused it:
-- a slot was taken, or the organizer is not the signed sender), platform_refused (the video-conference system
-- refused it with a delivery.refusal: its slots are released).
CREATE TABLE meetings (
    booking_id       uuid        PRIMARY KEY,
    booker_agency    text        NOT NULL,
    booker_system    text        NOT NULL,
    organizer_agency text        NOT NULL,
    organizer_name   text        NOT NULL,
    title            text        NOT NULL,
    start_at         timestamptz NOT NULL,
    end_at           timestamptz NOT NULL,
    state            text        NOT NULL CHECK (state IN ('booked', 'refused', 'platform_refused')),
    code             text,
    detail           text,
    meeting_number   text,
    confirm_by       timestamptz,
    reminders_armed  boolean     NOT NULL DEFAULT false,
    received_at      timestamptz NOT NULL,
    decided_at       timestamptz NOT NULL,
    CHECK (end_at > start_at)
);
CREATE INDEX meetings_number ON meetings (meeting_number) WHERE meeting_number IS NOT NULL;

-- The rooms and terminals a booking holds: resource is 'room:<agency code>/<room>' or 'terminal:<number>', slot the
-- meeting's [start, end). held = false once the booking no longer holds it (the platform refused it).
CREATE TABLE meeting_slots (
    booking_id uuid      NOT NULL REFERENCES meetings (booking_id) ON DELETE CASCADE,
    resource   text      NOT NULL,
    label      text      NOT NULL,
    slot       tstzrange NOT NULL CHECK (NOT isempty(slot)),
    held       boolean   NOT NULL DEFAULT true,
    PRIMARY KEY (booking_id, resource),
    CONSTRAINT meeting_slot_taken EXCLUDE USING gist (resource WITH =, slot WITH &&) WHERE (held)
);

-- Who must confirm attendance (every venue's agency but the booker's and the organizer's, and every other agency the
-- video-conference system sent a meeting.notice to), the system the hub delivered the notice to, and the answer.
CREATE TABLE meeting_participants (
    booking_id       uuid        NOT NULL REFERENCES meetings (booking_id) ON DELETE CASCADE,
    agency_code      text        NOT NULL,
    agency_name      text        NOT NULL,
    role             text        NOT NULL CHECK (role IN ('main', 'branch', 'invited')),
    system           text,
    notice_id        uuid,
    notified_at      timestamptz,
    attendance       text        CHECK (attendance IN ('attend', 'decline')),
    confirmed_at     timestamptz,
    confirm_id       uuid,
    reminders        integer     NOT NULL DEFAULT 0,
    last_reminded_at timestamptz,
    PRIMARY KEY (booking_id, agency_code)
);
CREATE INDEX meeting_participants_notice ON meeting_participants (notice_id) WHERE notice_id IS NOT NULL;
