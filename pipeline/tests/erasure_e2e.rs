//! GDPR erasure end to end, with real processes and real parts: a broker
//! (noida-db, or the embedded one in its own process), the S3 server for
//! the cold tier, DuckDB over every tier.
//!
//! An archive of 500,000 events over hot, warm and cold (written with the
//! archive's own writer); 100 accounts erased over HTTP; the compact stage
//! killed (it aborts, as `kill -9` would stop it) after each step of its
//! purge and started again; then:
//! - the state API answered 410 for erased accounts within 5 s;
//! - DuckDB over every tier finds no row naming them, and every other row;
//! - `kusanagi verify` passes after every crash;
//! - every certificate verifies, counts exactly its subject's rows, and a
//!   changed byte makes `kusanagi certificate verify` fail;
//! - decide tombstoned the accounts; the audit trail (topic and archived
//!   table) holds every step, once, and no account id;
//! - a second compact run over the same requests changes nothing and
//!   certifies the same bytes.

#[path = "erasure_e2e/cli.rs"]
mod cli;
mod common;
#[path = "erasure_e2e/scenario.rs"]
mod scenario;
#[path = "erasure_e2e/stored.rs"]
mod stored;

use common::BrokerKind;
use scenario::erasure_end_to_end;

#[test]
fn erasure_end_to_end_on_embedded_broker() {
    erasure_end_to_end(BrokerKind::Embedded);
}

#[test]
fn erasure_end_to_end_on_noida_db_process() {
    erasure_end_to_end(BrokerKind::NoidaDb);
}
