//! The view stage (being built): `accounts` and `accounts.transitions` ->
//! the state API. So far its pure core, the account index.
//!
//! | module | what |
//! |---|---|
//! | [`index`] | latest state per account, its versions, state at a time, the withdrawal answer |

pub mod index;

pub use index::{AccountIndex, Version, Withdrawal};

#[cfg(test)]
mod tests;
