"""Local tables of the sync transport (never synced themselves)."""

from __future__ import annotations

from hemei.core import MigrationSet

sync_migrations = MigrationSet("hemei.sync")

SYNC_SCHEMA = """
CREATE TABLE IF NOT EXISTS _hemei_peers (
    node_id TEXT PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('parent', 'child')),
    name TEXT NOT NULL,
    scope TEXT NOT NULL,
    public_key BLOB NOT NULL,
    url TEXT,
    enrolled_ms INTEGER NOT NULL,
    last_contact_ms INTEGER,
    revoked INTEGER NOT NULL DEFAULT 0,
    their_vv TEXT NOT NULL DEFAULT '{}',
    pending_up INTEGER NOT NULL DEFAULT 0,
    pending_down INTEGER NOT NULL DEFAULT 0,
    last_error TEXT);
CREATE TABLE IF NOT EXISTS _hemei_invites (
    token_hash BLOB PRIMARY KEY,
    name TEXT NOT NULL,
    scope TEXT NOT NULL,
    expires_ms INTEGER NOT NULL,
    used_by TEXT,
    used_ms INTEGER);
CREATE TABLE IF NOT EXISTS _hemei_nonces (
    nonce TEXT PRIMARY KEY,
    node_id TEXT NOT NULL,
    expires_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS _hemei_nonces_expiry ON _hemei_nonces (expires_ms);
CREATE TABLE IF NOT EXISTS _hemei_forks (
    origin TEXT NOT NULL,
    seq INTEGER NOT NULL,
    held_head BLOB,
    presented_size INTEGER NOT NULL,
    presented_head BLOB NOT NULL,
    presented_signature BLOB NOT NULL,
    peer TEXT NOT NULL,
    seen_ms INTEGER NOT NULL,
    PRIMARY KEY (origin, presented_size, presented_head));
CREATE TABLE IF NOT EXISTS _hemei_anonymous_refusals (
    id INTEGER PRIMARY KEY,
    seen_ms INTEGER NOT NULL,
    address TEXT,
    code TEXT NOT NULL,
    reason TEXT NOT NULL,
    request TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS _hemei_bundle_acks (
    bundle_id TEXT PRIMARY KEY,
    peer TEXT NOT NULL,
    imported_ms INTEGER NOT NULL);
"""


@sync_migrations.step
def sync_0001_tables(db):
    for statement in SYNC_SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)


@sync_migrations.step
def sync_0002_peer_modules(db):
    # What each peer last announced: {module: schema version} (see hemei.core.versions).
    db.execute("ALTER TABLE _hemei_peers ADD COLUMN modules TEXT")


@sync_migrations.step
def sync_0003_peer_clock(db):
    # How far the peer's clock read ahead of this node's at the last contact (ms, negative: behind).
    db.execute("ALTER TABLE _hemei_peers ADD COLUMN clock_ahead_ms INTEGER")


@sync_migrations.step
def sync_0004_peer_signs_answers(db):
    # 1 once the peer (a parent) has signed an answer: from then on an unsigned one is not its word.
    db.execute("ALTER TABLE _hemei_peers ADD COLUMN signs_answers INTEGER NOT NULL DEFAULT 0")


@sync_migrations.step
def sync_0005_peer_utc_offset(db):
    # The peer's time zone at the last contact, minutes ahead of UTC: cases and hours carry local times.
    db.execute("ALTER TABLE _hemei_peers ADD COLUMN utc_offset_min INTEGER")


@sync_migrations.step
def sync_0006_refusal_repeats(db):
    # When a refusal of each kind (peer, code, request) was last logged, and how many like it since were
    # counted instead, with the latest reason (sync.peers.record_refusal).
    db.execute("CREATE TABLE _hemei_refusal_repeats (peer TEXT NOT NULL, code TEXT NOT NULL, request TEXT NOT NULL,"
               " logged_ms INTEGER NOT NULL, repeats INTEGER NOT NULL DEFAULT 0, last_reason TEXT,"
               " PRIMARY KEY (peer, code, request))")
