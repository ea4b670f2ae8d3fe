//! The real SFTP client (ssh2): being written.
