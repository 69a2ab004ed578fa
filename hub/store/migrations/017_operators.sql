-- The ops page's operators and their sessions (issue 15). An operator has one role of 三员分立 plus the duty
-- operator; the password is an Argon2id hash (argon2-cffi's encoded form, parameters included). Five wrong passwords
-- in a row lock the account until an administrator unlocks it or `locked_until` passes (30 minutes). A session is
-- stored by the SHA-256 of its token only (the cookie holds the token; a stolen table holds nothing usable), with
-- its CSRF token, an idle expiry (30 minutes after the last request) and an absolute one (12 hours after login).
-- Written by hub/store/operators.py only.
CREATE TABLE operators (
    name          text        PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9._-]{1,31}$'),
    display_name  text        NOT NULL CHECK (btrim(display_name) <> '' AND length(display_name) <= 64),
    role          text        NOT NULL CHECK (role IN ('admin', 'security', 'auditor', 'duty')),
    password_hash text        NOT NULL CHECK (password_hash LIKE '$argon2id$%'),
    failed_logins integer     NOT NULL DEFAULT 0 CHECK (failed_logins >= 0),
    locked_until  timestamptz,
    disabled      boolean     NOT NULL DEFAULT false,
    created_by    text        NOT NULL,
    created_at    timestamptz NOT NULL,
    last_login_at timestamptz
);

CREATE TABLE operator_sessions (
    token_sha256       bytea       PRIMARY KEY CHECK (length(token_sha256) = 32),
    operator           text        NOT NULL REFERENCES operators (name) ON DELETE CASCADE,
    csrf               text        NOT NULL,
    created_at         timestamptz NOT NULL,
    last_seen_at       timestamptz NOT NULL,
    idle_expires_at    timestamptz NOT NULL,
    absolute_expires_at timestamptz NOT NULL
);
CREATE INDEX operator_sessions_operator ON operator_sessions (operator);
CREATE INDEX operator_sessions_expiry ON operator_sessions (absolute_expires_at);
