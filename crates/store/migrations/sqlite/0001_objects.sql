-- Every stored object lives in one versioned table. The payload is JSON so that adding a field to a
-- model needs no migration; the columns are only what the backend must query on.
CREATE TABLE objects (
    kind       TEXT    NOT NULL,
    id         TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    owner      TEXT,
    expires_at INTEGER,
    data       TEXT    NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX objects_owner ON objects (kind, owner) WHERE owner IS NOT NULL;
CREATE INDEX objects_expiry ON objects (expires_at) WHERE expires_at IS NOT NULL;
