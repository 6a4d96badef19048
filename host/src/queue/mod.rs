//! The Redis protocol for jobs (see docs/protocol.md).
