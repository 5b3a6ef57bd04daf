//! Storage for the provider: a small versioned object backend (memory, SQLite; PostgreSQL later) and
//! a typed layer on top that gives every model compare-and-swap updates.
//!
//! Backends only move opaque records; all typing, retry and conflict logic lives once in [`Store`].

mod backend;
mod error;
mod memory;
pub mod model;
mod postgres;
mod sqlite;
mod typed;

pub mod conformance;
pub mod testing;

pub use backend::{Backend, Kind, Record, Take, Versioned};
pub use error::StoreError;
pub use memory::MemoryBackend;
pub use postgres::PostgresBackend;
pub use sqlite::SqliteBackend;
pub use typed::{Object, Store, UpdateError};
