//! The same handlers in every guest language, through the real runtime.
