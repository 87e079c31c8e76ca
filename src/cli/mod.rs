//! The subcommands besides `serve`: administration straight on the database (`keys`,
//! `tenants`), and a client that talks to a running server over its HTTP API.

mod admin;
pub mod client;

pub use admin::{keys, tenants};
