-- Every stored object lives in one versioned table (see the SQLite migration for the reasoning).
CREATE TABLE objects (
    kind       TEXT   NOT NULL,
    id         TEXT   NOT NULL,
    version    BIGINT NOT NULL,
    owner      TEXT,
    expires_at BIGINT,
    data       TEXT   NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX objects_owner ON objects (kind, owner) WHERE owner IS NOT NULL;
CREATE INDEX objects_expiry ON objects (expires_at) WHERE expires_at IS NOT NULL;
