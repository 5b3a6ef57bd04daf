//! The kubeconfigs and kubectl commands the generator page hands out.

use base64::Engine;
use keygate_config::KubeconfigCluster;
use serde_json::{Value, json};

use crate::{KUBECONFIG_CLIENT_ID, LOGIN_CLIENT_ID};

/// What a kubeconfig is made of, for one cluster and one login.
pub struct Credentials<'a> {
    pub issuer: &'a str,
    pub email: &'a str,
    pub id_token: &'a str,
    pub refresh_token: &'a str,
}

fn cluster_entry(cluster: &KubeconfigCluster) -> Value {
    let mut c = json!({ "server": cluster.master_uri });
    if let Some(ca) = &cluster.master_ca {
        // A trailing newline keeps PEM parsers happy.
        c["certificate-authority-data"] = base64::engine::general_purpose::STANDARD
            .encode(format!("{}\n", ca.trim()))
            .into();
    }
    c
}

fn document(cluster: &KubeconfigCluster, user_name: &str, user: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": cluster.id, "cluster": cluster_entry(cluster) }],
        "users": [{ "name": user_name, "user": user }],
        "contexts": [{ "name": cluster.id, "context": { "cluster": cluster.id, "user": user_name } }],
        "current-context": cluster.id,
        "preferences": {},
    })
}

fn yaml(v: &Value) -> String {
    serde_saphyr::to_string(v).unwrap_or_default()
}

/// The user entry's name: one per login and cluster, so several kubeconfigs merge cleanly.
pub fn user_name(cluster: &KubeconfigCluster, email: &str) -> String {
    format!("{email}@{}", cluster.id)
}

/// A kubeconfig with kubectl's `oidc` auth provider: the ID token and the refresh token, which
/// kubectl uses when the ID token expires (client `kubeconfig-generator`, public: no secret).
pub fn auth_provider(cluster: &KubeconfigCluster, c: &Credentials) -> String {
    let user = json!({
        "auth-provider": {
            "name": "oidc",
            "config": {
                "idp-issuer-url": c.issuer,
                "client-id": KUBECONFIG_CLIENT_ID,
                "id-token": c.id_token,
                "refresh-token": c.refresh_token,
            }
        }
    });
    yaml(&document(cluster, &user_name(cluster, c.email), user))
}

/// A kubeconfig that runs `keygate login` as the exec credential plugin (it logs in through the
/// browser or the device flow on first use, then refreshes on its own).
pub fn exec(cluster: &KubeconfigCluster, issuer: &str, email: &str) -> String {
    let user = json!({
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": "keygate",
            "args": ["login", "--issuer", issuer, "--client-id", LOGIN_CLIENT_ID],
            "interactiveMode": "IfAvailable",
            "provideClusterInfo": false,
        }
    });
    yaml(&document(cluster, &user_name(cluster, email), user))
}

/// Shell-quotes a value for the commands shown on the page.
fn sh(v: &str) -> String {
    format!("'{}'", v.replace('\'', r"'\''"))
}

/// The `kubectl config` commands that add this cluster and login to the user's own kubeconfig.
pub fn commands(cluster: &KubeconfigCluster, c: &Credentials) -> String {
    let user = user_name(cluster, c.email);
    let mut out = String::new();
    let mut set_cluster = format!(
        "kubectl config set-cluster {} --server={}",
        sh(&cluster.id),
        sh(&cluster.master_uri)
    );
    if let Some(ca) = &cluster.master_ca {
        out.push_str(&format!(
            "cat > {}-ca.crt <<'EOF'\n{}\nEOF\n",
            cluster.id,
            ca.trim()
        ));
        set_cluster.push_str(&format!(
            " --certificate-authority={}-ca.crt --embed-certs=true",
            cluster.id
        ));
    }
    out.push_str(&set_cluster);
    out.push('\n');
    out.push_str(&format!(
        "kubectl config set-credentials {} --auth-provider=oidc \\\n  --auth-provider-arg=idp-issuer-url={} \\\n  --auth-provider-arg=client-id={} \\\n  --auth-provider-arg=id-token={} \\\n  --auth-provider-arg=refresh-token={}\n",
        sh(&user),
        sh(c.issuer),
        KUBECONFIG_CLIENT_ID,
        sh(c.id_token),
        sh(c.refresh_token)
    ));
    out.push_str(&format!(
        "kubectl config set-context {} --cluster={} --user={}\n",
        sh(&cluster.id),
        sh(&cluster.id),
        sh(&user)
    ));
    out.push_str(&format!("kubectl config use-context {}\n", sh(&cluster.id)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> KubeconfigCluster {
        KubeconfigCluster {
            id: "prod".into(),
            master_uri: "https://10.0.0.1:6443".into(),
            master_ca: Some("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----".into()),
            description: None,
        }
    }

    #[test]
    fn auth_provider_kubeconfig_shape() {
        let c = Credentials {
            issuer: "https://dex.example.com/",
            email: "jane@example.com",
            id_token: "a.b.c",
            refresh_token: "r.s",
        };
        let text = auth_provider(&cluster(), &c);
        let v: Value = serde_saphyr::from_str(&text).unwrap_or(Value::Null);
        assert_eq!(v["current-context"], "prod");
        assert_eq!(v["users"][0]["name"], "jane@example.com@prod");
        assert_eq!(
            v["users"][0]["user"]["auth-provider"]["config"]["refresh-token"],
            "r.s"
        );
        let ca = v["clusters"][0]["cluster"]["certificate-authority-data"]
            .as_str()
            .unwrap_or("");
        let pem = base64::engine::general_purpose::STANDARD
            .decode(ca)
            .unwrap_or_default();
        assert!(String::from_utf8_lossy(&pem).ends_with("-----END CERTIFICATE-----\n"));
        let cmds = commands(&cluster(), &c);
        assert!(cmds.contains("--auth-provider-arg=refresh-token='r.s'"));
        assert!(cmds.contains("--embed-certs=true"));
    }
}
