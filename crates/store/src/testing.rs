//! Test support: a real PostgreSQL server started by the tests themselves.

use std::path::PathBuf;
use std::process::Command;

/// A throwaway PostgreSQL server for tests: initdb in a temporary directory, started on a free
/// 127.0.0.1 port, stopped (immediately) and removed on drop.
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
}

#[allow(clippy::unwrap_used)]
fn as_postgres(cmd: &str) -> std::process::Output {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if is_root {
        Command::new("su")
            .args(["postgres", "-s", "/bin/sh", "-c", cmd])
            .output()
            .unwrap()
    } else {
        Command::new("sh").args(["-c", cmd]).output().unwrap()
    }
}

impl Postgres {
    #[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    pub fn start() -> Self {
        let bindir = Command::new("pg_config")
            .arg("--bindir")
            .output()
            .expect("PostgreSQL is needed (pg_config): the test command installs it");
        let bin = PathBuf::from(String::from_utf8_lossy(&bindir.stdout).trim());
        assert!(
            bin.join("initdb").exists(),
            "no initdb in {}: install the postgresql package",
            bin.display()
        );
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let data = std::env::temp_dir().join(format!(
            "keygate-pg-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data).unwrap();
        let _ = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&data)
            .status();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let out = as_postgres(&format!(
            "{}/initdb -D {}/db -A trust -U postgres --no-sync",
            bin.display(),
            data.display()
        ));
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = as_postgres(&format!(
            "{}/pg_ctl -D {d}/db -l {d}/log -o \"-c listen_addresses=127.0.0.1 -p {port} -k {d} -c fsync=off\" -w start",
            bin.display(),
            d = data.display()
        ));
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { bin, data, port }
    }

    /// Stops the server (fast shutdown), keeping its data.
    pub fn stop(&self) {
        as_postgres(&format!(
            "{}/pg_ctl -D {}/db -m fast -w stop",
            self.bin.display(),
            self.data.display()
        ));
    }

    /// Starts it again on the same port.
    #[allow(clippy::panic)]
    pub fn restart(&self) {
        let out = as_postgres(&format!(
            "{}/pg_ctl -D {d}/db -l {d}/log -o \"-c listen_addresses=127.0.0.1 -p {} -k {d} -c fsync=off\" -w start",
            self.bin.display(),
            self.port,
            d = self.data.display()
        ));
        if !out.status.success() {
            panic!("pg_ctl start: {}", String::from_utf8_lossy(&out.stderr));
        }
    }

    /// The URL of database `db` (empty: the server's root, to append a name to).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        as_postgres(&format!(
            "{}/pg_ctl -D {}/db -m immediate stop",
            self.bin.display(),
            self.data.display()
        ));
        let _ = std::fs::remove_dir_all(&self.data);
    }
}
