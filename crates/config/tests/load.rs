#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use keygate_config::{SigningAlgorithm, StorageConfig, load};

const HASH: &str = "$2a$10$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W";

fn write(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keygate-config-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn base() -> String {
    "apiVersion: keygate.io/v1alpha1\nkind: KeygateConfig\nspec:\n  issuer: http://127.0.0.1:5556/\n  storage: {type: memory}\n".into()
}

#[test]
fn full_deckhouse_style_config() {
    let text = format!(
        "{}---
apiVersion: deckhouse.io/v1
kind: User
metadata: {{name: admin}}
spec: {{email: Admin@Example.com, password: \"{HASH}\"}}
---
apiVersion: deckhouse.io/v1alpha1
kind: Group
metadata: {{name: admins}}
spec: {{name: admins, members: [{{kind: User, name: admin}}]}}
---
apiVersion: deckhouse.io/v1alpha1
kind: Group
metadata: {{name: everyone}}
spec: {{name: everyone, members: [{{kind: Group, name: admins}}]}}
---
apiVersion: deckhouse.io/v1
kind: DexClient
metadata:
  name: grafana
  namespace: monitoring
  annotations: {{dexclient.deckhouse.io/allow-access-to-kubernetes: \"\"}}
spec: {{redirectURIs: [\"https://grafana.example.com/login/generic_oauth\"], secret: change-me}}
---
apiVersion: deckhouse.io/v1alpha1
kind: ModuleConfig
metadata: {{name: user-authn}}
spec:
  version: 2
  settings: {{idTokenTTL: 20m, publishAPI: {{enabled: true}}}}
",
        base()
    );
    let cfg = load(&write("full", &text)).unwrap();
    assert_eq!(cfg.provider.issuer, "http://127.0.0.1:5556/");
    assert_eq!(cfg.provider.storage, StorageConfig::Memory);
    assert_eq!(cfg.provider.id_token_ttl, 1200);
    assert_eq!(cfg.provider.signing.algorithm, SigningAlgorithm::Rs256);
    assert_eq!(cfg.users.len(), 1);
    assert_eq!(cfg.users[0].email, "admin@example.com");
    assert_eq!(
        cfg.users[0].groups,
        vec!["admins".to_string(), "everyone".to_string()]
    );
    assert_eq!(cfg.clients[0].id, "dex-client-grafana@monitoring");
    assert!(cfg.clients[0].allow_access_to_kubernetes);
    assert!(cfg.clients[0].secret.as_ref().unwrap().matches("change-me"));
    assert!(format!("{cfg:?}").contains("<redacted>"));
    assert!(
        !format!("{cfg:?}").contains("change-me"),
        "secrets must not reach Debug output"
    );
    assert!(cfg.warnings.iter().any(|w| w.contains("publishAPI")));
}

#[test]
fn unknown_field_names_file_document_and_path() {
    let text = format!(
        "{}---\napiVersion: deckhouse.io/v1\nkind: DexClient\nmetadata: {{name: app}}\nspec:\n  redirectURIs: [\"https://a/cb\"]\n  trustedPeer: [x]\n",
        base()
    );
    let path = write("unknown", &text);
    let err = load(&path).unwrap_err();
    assert_eq!(err.file.as_deref(), Some(path.as_path()));
    assert_eq!(err.document, Some(2));
    assert_eq!(err.field.as_deref(), Some("spec.trustedPeer"));
    let shown = err.to_string();
    assert!(shown.contains("document 2 (DexClient \"app\")"), "{shown}");
    assert!(shown.contains("unknown field `trustedPeer`"), "{shown}");
}

#[test]
fn wrong_type_names_nested_field() {
    let text = "apiVersion: keygate.io/v1alpha1\nkind: KeygateConfig\nspec:\n  issuer: http://127.0.0.1:5556/\n  refreshTokens:\n    disableRotation: maybe\n";
    let err = load(&write("type", text)).unwrap_err();
    assert_eq!(err.document, Some(1));
    assert_eq!(
        err.field.as_deref(),
        Some("spec.refreshTokens.disableRotation")
    );
}

#[test]
fn bad_values_are_refused_with_their_field() {
    let cases = [
        ("  idTokenTTL: 10 minutes\n", "spec.idTokenTTL"),
        ("  signing: {algorithm: EdDSA}\n", "spec.signing.algorithm"),
        ("  storage: {type: etcd}\n", "spec.storage.type"),
    ];
    for (extra, field) in cases {
        let text = format!(
            "apiVersion: keygate.io/v1alpha1\nkind: KeygateConfig\nspec:\n  issuer: http://127.0.0.1:5556/\n{extra}"
        );
        let err = load(&write("bad", &text)).unwrap_err();
        assert_eq!(err.field.as_deref(), Some(field), "{err}");
    }
    let user = |pw: &str, email: &str| {
        format!(
            "{}---\napiVersion: deckhouse.io/v1\nkind: User\nmetadata: {{name: u}}\nspec: {{email: \"{email}\", password: \"{pw}\"}}\n",
            base()
        )
    };
    let err = load(&write("pw", &user("plaintext", "u@example.com"))).unwrap_err();
    assert_eq!(err.field.as_deref(), Some("spec.password"));
    let err = load(&write("sys", &user(HASH, "system:admin"))).unwrap_err();
    assert_eq!(err.field.as_deref(), Some("spec.email"));
    let group = format!(
        "{}---\napiVersion: deckhouse.io/v1alpha1\nkind: Group\nmetadata: {{name: g}}\nspec: {{name: \"system:masters\", members: []}}\n",
        base()
    );
    let err = load(&write("grp", &group)).unwrap_err();
    assert_eq!(err.field.as_deref(), Some("spec.name"));
}

#[test]
fn group_cycles_load_with_a_warning() {
    let text = format!(
        "{}---
apiVersion: deckhouse.io/v1
kind: User
metadata: {{name: jane}}
spec: {{email: jane@example.com, password: \"{HASH}\"}}
---
apiVersion: deckhouse.io/v1alpha1
kind: Group
metadata: {{name: a}}
spec: {{name: a, members: [{{kind: User, name: jane}}, {{kind: Group, name: b}}]}}
---
apiVersion: deckhouse.io/v1alpha1
kind: Group
metadata: {{name: b}}
spec: {{name: b, members: [{{kind: Group, name: a}}, {{kind: User, name: ghost}}]}}
",
        base()
    );
    let cfg = load(&write("cycle", &text)).unwrap();
    assert_eq!(cfg.users[0].groups, vec!["a".to_string(), "b".to_string()]);
    assert!(cfg.warnings.iter().any(|w| w.contains("cycle")));
    assert!(
        cfg.warnings
            .iter()
            .any(|w| w.contains("\"ghost\" does not exist"))
    );
}

#[test]
fn directory_of_files_and_missing_keygate_config() {
    let dir = std::env::temp_dir().join(format!("keygate-config-{}-dir", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("10-users.yaml"), format!("apiVersion: deckhouse.io/v1\nkind: User\nmetadata: {{name: u}}\nspec: {{email: u@example.com, password: \"{HASH}\"}}\n")).unwrap();
    let err = load(&dir).unwrap_err();
    assert!(err.to_string().contains("no KeygateConfig"), "{err}");
    std::fs::write(dir.join("00-keygate.yml"), base()).unwrap();
    std::fs::write(dir.join("README.md"), "not yaml: [").unwrap();
    let cfg = load(&dir).unwrap();
    assert_eq!(cfg.users.len(), 1);
    assert_eq!(cfg.sources.len(), 2);
}

#[test]
fn duplicate_emails_and_invalid_yaml() {
    let dup = format!(
        "{}---\napiVersion: deckhouse.io/v1\nkind: User\nmetadata: {{name: a}}\nspec: {{email: x@example.com, password: \"{HASH}\"}}\n---\napiVersion: deckhouse.io/v1\nkind: User\nmetadata: {{name: b}}\nspec: {{email: X@example.com, password: \"{HASH}\"}}\n",
        base()
    );
    let err = load(&write("dup", &dup)).unwrap_err();
    assert_eq!(err.document, Some(3));
    assert_eq!(err.field.as_deref(), Some("spec.email"));
    let err = load(&write("yaml", "kind: [unclosed\n")).unwrap_err();
    assert!(err.to_string().contains("invalid YAML"), "{err}");
}

#[test]
fn kubectl_list_output_and_exported_module_config_load() {
    let text = format!(
        "{}---
apiVersion: v1
kind: List
metadata: {{resourceVersion: \"\"}}
items:
- apiVersion: deckhouse.io/v1
  kind: User
  metadata: {{name: a, uid: 1234, resourceVersion: \"99\", creationTimestamp: \"2026-01-01T00:00:00Z\"}}
  spec: {{email: a@example.com, password: \"{HASH}\", groups: [stale], userID: a}}
  status: {{groups: [stale], expireAt: \"2030-01-01T00:00:00Z\"}}
- apiVersion: deckhouse.io/v1
  kind: DexClient
  metadata:
    name: kubeconfig
    namespace: tools
    annotations: {{dexclient.deckhouse.io/allow-access-to-kubernetes: \"false\"}}
  spec: {{redirectURIs: [\"http://localhost:8000\"], secret: s}}
---
apiVersion: deckhouse.io/v1alpha1
kind: ModuleConfig
metadata: {{name: user-authn}}
spec:
  enabled: true
  version: 2
  maintenance: NoResourceReconciliation
  settings:
    resources: {{requests: {{cpu: 100m}}}}
    passwordPolicy: {{complexityLevel: Fair, lockout: {{maxAttempts: 5, lockDuration: 1d}}}}
",
        base()
    );
    let cfg = load(&write("list", &text)).unwrap();
    assert_eq!(cfg.users.len(), 1);
    assert!(
        cfg.users[0].groups.is_empty(),
        "deprecated spec.groups is ignored"
    );
    assert_eq!(cfg.users[0].expires_at, Some(1_893_456_000));
    assert!(
        cfg.clients[0].allow_access_to_kubernetes,
        "Deckhouse's annotation counts by presence"
    );
    let lockout = cfg.provider.lockout.unwrap();
    assert_eq!((lockout.max_attempts, lockout.lock_duration), (5, 86_400));
    assert!(
        cfg.warnings
            .iter()
            .any(|w| w.contains("spec.groups is deprecated"))
    );
    assert!(
        cfg.warnings
            .iter()
            .any(|w| w.contains("only lockout applies"))
    );
}

#[test]
fn postgres_url_from_a_file() {
    let dir = std::env::temp_dir().join(format!("keygate-config-{}-pgurl", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("url"),
        "postgres://keygate:s3cret@db:5432/keygate\n",
    )
    .unwrap();
    let text = format!(
        "apiVersion: keygate.io/v1alpha1\nkind: KeygateConfig\nspec:\n  issuer: http://127.0.0.1:5556/\n  storage: {{type: postgres, urlFile: {}}}\n",
        dir.join("url").display()
    );
    let cfg = load(&write("pg", &text)).unwrap();
    match &cfg.provider.storage {
        StorageConfig::Postgres { url } => {
            assert!(url.matches("postgres://keygate:s3cret@db:5432/keygate"))
        }
        other => panic!("{other:?}"),
    }
    assert!(
        !format!("{cfg:?}").contains("s3cret"),
        "the URL holds a password: never in Debug"
    );
}

#[test]
fn authenticator_errors_name_the_application_they_are_in() {
    let doc = |spec: &str| {
        format!(
            "apiVersion: deckhouse.io/v1\nkind: DexAuthenticator\nmetadata: {{name: app, namespace: web}}\nspec:\n{spec}  secret: s\n---\napiVersion: keygate.io/v1alpha1\nkind: AuthenticatorConfig\nspec:\n  issuer: http://127.0.0.1:5556/\n  cookieSecret: \"0123456789abcdef0123456789abcdef\"\n  sessionStore: {{type: memory}}\n"
        )
    };
    let cases = [
        (
            "  applicationDomain: \"bad/host\"\n",
            "spec.applicationDomain",
        ),
        (
            "  applicationDomain: ok.example.com\n  additionalApplications:\n  - {domain: a.example.com}\n  - {domain: \"b c\"}\n",
            "spec.additionalApplications[1].domain",
        ),
        (
            "  applications:\n  - {domain: a.example.com}\n  - {domain: b.example.com, signOutURL: \"::nope\"}\n",
            "spec.applications[1].signOutURL",
        ),
        (
            "  applicationDomain: ok.example.com\n  signOutURL: \"::nope\"\n",
            "spec.signOutURL",
        ),
    ];
    for (spec, field) in cases {
        let err = keygate_config::load_authenticator(&write("authn", &doc(spec))).unwrap_err();
        assert_eq!(err.field.as_deref(), Some(field), "{err}");
    }
    // And a good one loads.
    let ok = keygate_config::load_authenticator(&write(
        "authn-ok",
        &doc(
            "  applicationDomain: ok.example.com\n  additionalApplications:\n  - {domain: a.example.com}\n",
        ),
    ));
    assert!(ok.is_ok(), "{:?}", ok.err());
}

#[test]
fn authenticator_session_cache_is_on_unless_turned_off() {
    let doc = |store: &str| {
        format!(
            "apiVersion: deckhouse.io/v1\nkind: DexAuthenticator\nmetadata: {{name: app, namespace: web}}\nspec:\n  applicationDomain: ok.example.com\n  secret: s\n---\napiVersion: keygate.io/v1alpha1\nkind: AuthenticatorConfig\nspec:\n  issuer: http://127.0.0.1:5556/\n  cookieSecret: \"0123456789abcdef0123456789abcdef\"\n  sessionStore: {store}\n"
        )
    };
    let load =
        |name: &str, store: &str| keygate_config::load_authenticator(&write(name, &doc(store)));
    assert!(
        load("cache-default", "{type: memory}")
            .unwrap()
            .session_cache
    );
    assert!(
        !load("cache-off", "{type: memory, cache: false}")
            .unwrap()
            .session_cache
    );
    let err = load("cache-bad", "{type: memory, cache: sometimes}").unwrap_err();
    assert!(err.to_string().contains("cache"), "{err}");
    // TLS to Redis: rediss:// with an optional CA file; a CA file for plain redis:// is a mistake.
    let tls = load(
        "rediss",
        "{type: redis, url: \"rediss://r:6380/0\", caFile: /etc/ca.pem}",
    )
    .unwrap();
    assert!(matches!(
        tls.session_store,
        keygate_config::SessionStoreConfig::Redis {
            ca_file: Some(_),
            ..
        }
    ));
    let err = load(
        "redis-ca",
        "{type: redis, url: \"redis://r:6379/0\", caFile: /etc/ca.pem}",
    )
    .unwrap_err();
    assert_eq!(
        err.field.as_deref(),
        Some("spec.sessionStore.caFile"),
        "{err}"
    );
    let err = load("redis-http", "{type: redis, url: \"http://r/\"}").unwrap_err();
    assert_eq!(err.field.as_deref(), Some("spec.sessionStore.url"), "{err}");
}
