//! Private redis-server processes for tests.
