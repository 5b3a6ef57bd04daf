//! Test support: a real PostgreSQL server started by the tests themselves.

use std::path::PathBuf;
use std::process::Command;

/// A throwaway PostgreSQL server for tests: initdb in a temporary directory, started on a free
/// 127.0.0.1 port, stopped (immediately) and removed on drop.
pub struct Postgres {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    /// The TLS server's certificates, removed with the server.
    tls_dir: Option<PathBuf>,
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
        Self::start_with("")
    }

    /// A server that also speaks TLS, with a certificate for 127.0.0.1 issued by a throwaway
    /// CA; returns the CA's PEM file, for `sslrootcert`.
    #[allow(clippy::unwrap_used, clippy::panic)]
    pub fn start_tls() -> (Self, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "keygate-pg-tls-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        let script = format!(
            "set -e; cd {d}; \
             openssl req -x509 {ec} -keyout ca.key -out ca.pem -days 2 -subj /CN=keygate-test-ca; \
             openssl req {ec} -keyout server.key -out server.csr -subj /CN=127.0.0.1; \
             openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
               -out server.pem -days 2 -extfile ext; \
             chmod 600 server.key; chown postgres:postgres server.key server.pem 2>/dev/null || true",
            d = dir.display()
        );
        let out = Command::new("sh").args(["-c", &script]).output().unwrap();
        if !out.status.success() {
            panic!("openssl: {}", String::from_utf8_lossy(&out.stderr));
        }
        let _ = Command::new("chmod").arg("755").arg(&dir).status();
        let mut pg = Self::start_with(&format!(
            " -c ssl=on -c ssl_cert_file={d}/server.pem -c ssl_key_file={d}/server.key",
            d = dir.display()
        ));
        let ca = dir.join("ca.pem");
        pg.tls_dir = Some(dir);
        (pg, ca)
    }

    #[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    fn start_with(extra: &str) -> Self {
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
            "{}/pg_ctl -D {d}/db -l {d}/log -o \"-c listen_addresses=127.0.0.1 -p {port} -k {d} -c fsync=off{extra}\" -w start",
            bin.display(),
            d = data.display()
        ));
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            bin,
            data,
            port,
            tls_dir: None,
        }
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
        if let Some(dir) = &self.tls_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
