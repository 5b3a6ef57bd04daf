//! A real OpenLDAP (slapd) for the LDAP connector's tests, built as RECIPES.md says: a `cn=config`
//! LDIF loaded with `slapadd -n0` into a temp dir, the directory's entries with `slapadd -n1`,
//! then `slapd` in the foreground (`-d stats`, so its log shows every connection, bind and search)
//! on free 127.0.0.1 ports: `ldap://` (StartTLS), `ldaps://`, and an `ldapi://` socket the test
//! uses to change the directory. A throwaway CA made with openssl signs the server certificate for
//! 127.0.0.1. The server refuses plaintext operations (`olcSecurity: ssf=71`: TLS or the local
//! socket), so a login that works went through TLS. Stopped by PID when dropped.
//!
//! The directory (`dc=example,dc=org`):
//! - `ou=people`: inetOrgPerson users jane, john and "star", whose uid `(*star*)` is made of
//!   filter metacharacters (injection tests; also proves a legitimate odd name still works);
//! - `ou=groups`: groupOfNames `devs` (members jane and john), `engineering` (members: the devs
//!   GROUP's DN, so jane and john are in it through nesting, and star directly), `ops` (john).

use std::hash::{BuildHasher, RandomState};
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;

use super::services::{Proc, ensure_tool, make_certificate};

pub const BASE_DN: &str = "dc=example,dc=org";
pub const ADMIN_DN: &str = "cn=admin,dc=example,dc=org";
pub const ADMIN_PW: &str = "admin-password";

pub const JANE_DN: &str = "uid=jane,ou=people,dc=example,dc=org";
pub const JANE_PW: &str = "jane-ldap-pw";
pub const JANE_MAIL: &str = "jane.doe@corp.example.org";
pub const JANE_CN: &str = "Jane Doe";
pub const JOHN_PW: &str = "john-ldap-pw";
pub const JOHN_MAIL: &str = "john.roe@corp.example.org";
/// A real uid made of filter metacharacters.
pub const STAR_UID: &str = "(*star*)";
pub const STAR_DN: &str = "uid=(*star*),ou=people,dc=example,dc=org";
pub const STAR_PW: &str = "star-ldap-pw";
pub const STAR_MAIL: &str = "star@corp.example.org";
pub const DEVS_DN: &str = "cn=devs,ou=groups,dc=example,dc=org";

/// How Keygate reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `ldap://` port, `startTLS: true`, `rootCAData` = our CA.
    StartTls,
    /// `ldaps://` port (the default scheme), `rootCAData` = our CA.
    Ldaps,
    /// `ldaps://` port without `rootCAData`: the system's roots do not know our CA.
    LdapsWithoutCa,
    /// `ldap://` port, `insecureNoSSL: true`: the server refuses plaintext binds.
    Plain,
}

pub struct Slapd {
    pub dir: PathBuf,
    /// `ldap://` (StartTLS).
    pub port: u16,
    pub ldaps_port: u16,
    /// The CA certificate (PEM) that signed the server's certificate.
    pub ca_pem: String,
    proc: Option<Proc>,
    slapd: PathBuf,
    starts: usize,
}

/// A free port BELOW Linux's ephemeral range (32768-60999): a port from `bind(0)` can be taken by
/// any outgoing connection (Keygate's own, to slapd, in the tests running alongside) between the
/// check and slapd's `listen`, and again while slapd is stopped for an outage test.
fn port_for_slapd() -> u16 {
    loop {
        let n = RandomState::new().hash_one(std::process::id());
        let port = 20_000 + u16::try_from(n % 12_000).unwrap();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn run(what: &str, cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn config_ldif(d: &Path) -> String {
    let d = d.display();
    format!(
        r"dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: {d}/slapd.pid
olcTLSCACertificateFile: {d}/ca.crt
olcTLSCertificateFile: {d}/tls.crt
olcTLSCertificateKeyFile: {d}/tls.key
olcSecurity: ssf=71

dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: /usr/lib/ldap
olcModuleLoad: back_mdb

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

include: file:///etc/ldap/schema/core.ldif

include: file:///etc/ldap/schema/cosine.ldif

include: file:///etc/ldap/schema/inetorgperson.ldif

dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config
olcAccess: {{0}}to * by * none

dn: olcDatabase={{1}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcSuffix: {BASE_DN}
olcRootDN: {ADMIN_DN}
olcRootPW: {ADMIN_PW}
olcDbDirectory: {d}/data
olcDbMaxSize: 16777216
olcAccess: {{0}}to attrs=userPassword by anonymous auth by * none
olcAccess: {{1}}to * by users read by * none
"
    )
}

fn data_ldif() -> String {
    format!(
        r"dn: {BASE_DN}
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=people,{BASE_DN}
objectClass: organizationalUnit
ou: people

dn: ou=groups,{BASE_DN}
objectClass: organizationalUnit
ou: groups

dn: {JANE_DN}
objectClass: inetOrgPerson
uid: jane
cn: {JANE_CN}
sn: Doe
mail: {JANE_MAIL}
userPassword: {JANE_PW}

dn: uid=john,ou=people,{BASE_DN}
objectClass: inetOrgPerson
uid: john
cn: John Roe
sn: Roe
mail: {JOHN_MAIL}
userPassword: {JOHN_PW}

dn: {STAR_DN}
objectClass: inetOrgPerson
uid: {STAR_UID}
cn: Star
sn: Star
mail: {STAR_MAIL}
userPassword: {STAR_PW}

dn: {DEVS_DN}
objectClass: groupOfNames
cn: devs
member: {JANE_DN}
member: uid=john,ou=people,{BASE_DN}

dn: cn=engineering,ou=groups,{BASE_DN}
objectClass: groupOfNames
cn: engineering
member: {DEVS_DN}
member: {STAR_DN}

dn: cn=ops,ou=groups,{BASE_DN}
objectClass: groupOfNames
cn: ops
member: uid=john,ou=people,{BASE_DN}
"
    )
}

impl Slapd {
    /// Installs slapd and ldap-utils when missing, builds the configuration and the directory in
    /// `dir`, and starts the server.
    pub fn start(dir: &Path) -> Slapd {
        let slapd = ensure_tool("slapd", "slapd");
        let slapadd = ensure_tool("slapadd", "slapd");
        ensure_tool("ldapmodify", "ldap-utils");
        let dir = dir.join("slapd");
        for sub in ["slapd.d", "data"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let (_, _, ca) = make_certificate(&dir);
        let ca_pem = std::fs::read_to_string(ca).unwrap();
        std::fs::write(dir.join("config.ldif"), config_ldif(&dir)).unwrap();
        std::fs::write(dir.join("data.ldif"), data_ldif()).unwrap();
        let slapd_d = dir.join("slapd.d");
        run(
            "slapadd -n0",
            Command::new(&slapadd)
                .arg("-n0")
                .arg("-F")
                .arg(&slapd_d)
                .arg("-l")
                .arg(dir.join("config.ldif")),
        );
        run(
            "slapadd -n1",
            Command::new(&slapadd)
                .arg("-n1")
                .arg("-F")
                .arg(&slapd_d)
                .arg("-l")
                .arg(dir.join("data.ldif")),
        );
        let mut s = Slapd {
            dir,
            port: port_for_slapd(),
            ldaps_port: port_for_slapd(),
            ca_pem,
            proc: None,
            slapd,
            starts: 0,
        };
        // Another test may have picked the same port meanwhile: pick again.
        for _ in 0..5 {
            if s.try_launch() {
                return s;
            }
            s.port = port_for_slapd();
            s.ldaps_port = port_for_slapd();
        }
        s.launch();
        s
    }

    fn ldapi_url(&self) -> String {
        format!(
            "ldapi://{}",
            super::enc(&self.dir.join("ldapi").display().to_string())
        )
    }

    /// The log of the current (or last) run.
    fn log_path(&self) -> PathBuf {
        self.dir.join(format!("slapd-{}.log", self.starts))
    }

    /// Starts slapd (again) on the same ports and data.
    pub fn launch(&mut self) {
        assert!(self.try_launch(), "slapd cannot listen:\n{}", self.log());
    }

    /// `false` when a port is taken; panics on any other failure.
    fn try_launch(&mut self) -> bool {
        assert!(self.proc.is_none(), "slapd is already running");
        self.starts += 1;
        let urls = format!(
            "ldap://127.0.0.1:{}/ ldaps://127.0.0.1:{}/ {}",
            self.port,
            self.ldaps_port,
            self.ldapi_url()
        );
        let mut proc = Proc::spawn(
            "slapd",
            Command::new(&self.slapd)
                .args(["-d", "stats", "-h", &urls, "-F"])
                .arg(self.dir.join("slapd.d")),
            self.log_path(),
        );
        // slapd listens in the order of `-h`, the local socket last: once that answers, the
        // ports are slapd's (and not someone else's).
        let ldapi = self.dir.join("ldapi");
        let ready = || {
            UnixStream::connect(&ldapi).is_ok()
                && TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && TcpStream::connect(("127.0.0.1", self.ldaps_port)).is_ok()
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = proc.exited() {
                let log = proc.log_text();
                if log.contains("Address already in use") {
                    return false;
                }
                panic!("slapd exited with {status}:\n{log}");
            }
            if ready() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "slapd did not listen within 20 s:\n{}",
                proc.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.proc = Some(proc);
        true
    }

    /// "The directory is down": SIGTERM by PID (slapd closes its database), SIGKILL after 10 s.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.terminate(Duration::from_secs(10));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Waits (up to 5 s) for `needle` in the log: slapd logs an operation's RESULT line after
    /// sending the result, so the client may have it first. Lines about a request (ACCEPT, BIND,
    /// SRCH) are logged before it is answered and need no wait.
    pub async fn wait_log(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.log().contains(needle) {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Connections slapd accepted so far (this run).
    pub fn connections(&self) -> usize {
        self.log().matches(" ACCEPT from ").count()
    }

    /// Simple binds as `dn` slapd received so far (this run).
    pub fn binds_as(&self, dn: &str) -> usize {
        self.log()
            .matches(&format!(" BIND dn=\"{dn}\" method=128"))
            .count()
    }

    /// Simple binds as anyone but the service account (this run).
    pub fn user_binds(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains(" BIND dn=\"") && l.contains("method=128"))
            .filter(|l| !l.contains(&format!("dn=\"{ADMIN_DN}\"")))
            .count()
    }

    /// Applies an LDIF change as the administrator, over the local socket.
    pub fn modify(&self, ldif: &str) {
        let mut child = Command::new("ldapmodify")
            .args([
                "-H",
                &self.ldapi_url(),
                "-x",
                "-D",
                ADMIN_DN,
                "-w",
                ADMIN_PW,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ldapmodify");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ldif.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "ldapmodify failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A `DexProvider` named `name` for this server, as Deckhouse documents it.
    pub fn dex_provider(&self, name: &str, display_name: &str, tls: Transport) -> String {
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_pem);
        let transport = match tls {
            Transport::StartTls => format!(
                "    host: 127.0.0.1:{}\n    startTLS: true\n    rootCAData: {ca}\n",
                self.port
            ),
            Transport::Ldaps => format!(
                "    host: 127.0.0.1:{}\n    insecureNoSSL: false\n    rootCAData: {ca}\n",
                self.ldaps_port
            ),
            Transport::LdapsWithoutCa => format!("    host: 127.0.0.1:{}\n", self.ldaps_port),
            Transport::Plain => format!(
                "    host: 127.0.0.1:{}\n    insecureNoSSL: true\n",
                self.port
            ),
        };
        format!(
            r#"---
apiVersion: deckhouse.io/v1
kind: DexProvider
metadata: {{name: {name}}}
spec:
  type: LDAP
  displayName: {display_name}
  ldap:
{transport}    bindDN: {ADMIN_DN}
    bindPW: {ADMIN_PW}
    usernamePrompt: Corporate login
    userSearch:
      baseDN: "ou=people,{BASE_DN}"
      filter: "(objectClass=inetOrgPerson)"
      username: uid
      idAttr: uid
      emailAttr: mail
      nameAttr: cn
    groupSearch:
      baseDN: "ou=groups,{BASE_DN}"
      filter: "(objectClass=groupOfNames)"
      nameAttr: cn
      userMatchers: [{{userAttr: DN, groupAttr: member}}]
"#
        )
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}
