//! Everything that touches the operating system: storage now, and the
//! network server, configuration and the peer transport as they come. The
//! logic they serve lives in `etcd-core`.

pub mod config;
pub mod log;
pub mod pb;
pub mod server;
pub mod sha256;
pub mod wal;
