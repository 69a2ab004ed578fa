-- Directory (issue 4): the agencies, systems and named groups of the directory file that `hub directory load`
-- accepted, plus one row per load (with the file itself, for the record). The current directory is replaced as a
-- whole, in one transaction; computed groups (city-bureaus, county-bureaus:<division>, …) are not stored, they
-- follow from the parent tree. Zone ceilings are enforced here too: the database never holds an internet system
-- above 公开 (0) or an extranet system above 内部 (1).

CREATE TABLE directory_versions (
    version         bigserial PRIMARY KEY,
    loaded_at       timestamptz NOT NULL DEFAULT now(),
    source_name     text,
    source_sha256   text CHECK (source_sha256 ~ '^[0-9a-f]{64}$'),
    source_xml      text,
    hub_system      text NOT NULL,
    hub_zone        text NOT NULL CHECK (hub_zone IN ('internal', 'extranet', 'internet')),
    hub_ceiling     smallint NOT NULL CHECK (hub_ceiling BETWEEN 0 AND 4),
    agency_count    integer NOT NULL,
    system_count    integer NOT NULL,
    group_count     integer NOT NULL
);

CREATE TABLE directory_agencies (
    code        text PRIMARY KEY CHECK (code ~ '^[0-9A-HJ-NPQRTUWXY]{2}[0-9]{6}[0-9A-HJ-NPQRTUWXY]{10}$'),
    name        text NOT NULL,
    name_en     text NOT NULL,
    division    text NOT NULL CHECK (division ~ '^[0-9]{6}$'),
    level       text NOT NULL CHECK (level IN ('nation', 'province', 'city', 'county', 'enterprise')),
    kind        text NOT NULL CHECK (kind IN ('bureau', 'government', 'enterprise')),
    zone        text NOT NULL CHECK (zone IN ('internal', 'extranet', 'internet')),
    parent      text REFERENCES directory_agencies (code) DEFERRABLE INITIALLY DEFERRED,
    position    integer NOT NULL,
    line        integer NOT NULL DEFAULT 0,
    CHECK (parent IS NULL OR parent <> code)
);

CREATE INDEX directory_agencies_parent ON directory_agencies (parent);

CREATE TABLE directory_systems (
    id              text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    agency          text NOT NULL REFERENCES directory_agencies (code) DEFERRABLE INITIALLY DEFERRED,
    name            text NOT NULL,
    name_en         text NOT NULL DEFAULT '',
    zone            text NOT NULL CHECK (zone IN ('internal', 'extranet', 'internet')),
    ceiling         smallint NOT NULL CHECK (ceiling BETWEEN 0 AND 4),
    accreditation   smallint CHECK (accreditation BETWEEN 0 AND 4),
    accepts         text[] NOT NULL DEFAULT '{}',
    cert_sha256     text UNIQUE CHECK (cert_sha256 ~ '^[0-9a-f]{64}$'),
    amqp_user       text NOT NULL UNIQUE,
    position        integer NOT NULL,
    line            integer NOT NULL DEFAULT 0,
    CHECK (zone <> 'internet' OR ceiling = 0),
    CHECK (zone <> 'extranet' OR ceiling <= 1),
    CHECK (zone <> 'internal' OR accreditation IS NOT NULL),
    CHECK (accreditation IS NULL OR ceiling <= accreditation)
);

CREATE INDEX directory_systems_agency ON directory_systems (agency);

CREATE TABLE directory_groups (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9-]{1,62}$'),
    title       text NOT NULL,
    title_en    text NOT NULL DEFAULT '',
    position    integer NOT NULL,
    line        integer NOT NULL DEFAULT 0
);

CREATE TABLE directory_group_members (
    group_name      text NOT NULL REFERENCES directory_groups (name) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
    position        integer NOT NULL,
    agency          text REFERENCES directory_agencies (code) DEFERRABLE INITIALLY DEFERRED,
    system          text REFERENCES directory_systems (id) DEFERRABLE INITIALLY DEFERRED,
    member_group    text CHECK (member_group ~ '^[a-z][a-z0-9-]{1,62}(:[0-9]{6})?$'),
    line            integer NOT NULL DEFAULT 0,
    PRIMARY KEY (group_name, position),
    CHECK ((agency IS NULL) <> (member_group IS NULL)),
    CHECK (system IS NULL OR agency IS NOT NULL)
);
