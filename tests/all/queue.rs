//! The queue protocol against a real redis-server.
