//! The one error every parse in this crate returns: a message that names the field at fault
//! and what would be accepted, ready to show to the user as is.

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct ParseError(pub String);
