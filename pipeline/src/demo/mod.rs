//! Synthetic game traffic.
