//! The `sql` interface for one attempt. No database is granted to any handler yet: `open`
//! answers `access-denied`, so no `connection` resource can exist.

use wasmtime::component::Resource;

use super::HostState;
use super::bindings::wasmq::job::sql;

/// An open connection, as the guest's `connection` resource holds it.
pub struct SqlConnection {
    _private: (),
}

fn no_connection() -> sql::Error {
    sql::Error::Other("no such connection".to_string())
}

impl sql::Host for HostState {}

impl sql::HostConnection for HostState {
    async fn open(&mut self, database: String) -> Result<Resource<SqlConnection>, sql::Error> {
        Err(sql::Error::AccessDenied(format!(
            "database {:?} is not granted to handler {}",
            database.escape_debug().to_string(),
            self.caps.handler
        )))
    }

    async fn query(
        &mut self,
        _handle: Resource<SqlConnection>,
        _statement: String,
        _params: Vec<sql::ParameterValue>,
    ) -> Result<sql::RowSet, sql::Error> {
        Err(no_connection())
    }

    async fn execute(
        &mut self,
        _handle: Resource<SqlConnection>,
        _statement: String,
        _params: Vec<sql::ParameterValue>,
    ) -> Result<u64, sql::Error> {
        Err(no_connection())
    }

    async fn begin(&mut self, _handle: Resource<SqlConnection>) -> Result<(), sql::Error> {
        Err(no_connection())
    }

    async fn commit(&mut self, _handle: Resource<SqlConnection>) -> Result<(), sql::Error> {
        Err(no_connection())
    }

    async fn rollback(&mut self, _handle: Resource<SqlConnection>) -> Result<(), sql::Error> {
        Err(no_connection())
    }

    async fn drop(&mut self, handle: Resource<SqlConnection>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}
