//! The HTML pages people see, for the provider and the authenticator alike: minijinja templates
//! embedded in the binary, overridable from a directory, and the static assets they link.

use std::path::Path;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keygate_config::Frontend;
use minijinja::{Environment, Value, context};

const EMBEDDED: [(&str, &str); 8] = [
    (
        "kubeconfig.html",
        include_str!("../templates/kubeconfig.html"),
    ),
    ("device.html", include_str!("../templates/device.html")),
    ("base.html", include_str!("../templates/base.html")),
    ("login.html", include_str!("../templates/login.html")),
    ("chooser.html", include_str!("../templates/chooser.html")),
    ("error.html", include_str!("../templates/error.html")),
    ("demo.html", include_str!("../templates/demo.html")),
    ("welcome.html", include_str!("../templates/welcome.html")),
];

pub const STYLESHEET: &str = include_str!("../static/keygate.css");
pub const FAVICON: &str = include_str!("../static/favicon.svg");
pub const COPY_JS: &str = include_str!("../static/copy.js");

/// A static asset by file name: its body and content type.
pub fn static_asset(file: &str) -> Option<(&'static str, &'static str)> {
    match file {
        "keygate.css" => Some((STYLESHEET, "text/css; charset=utf-8")),
        "favicon.svg" => Some((FAVICON, "image/svg+xml")),
        "copy.js" => Some((COPY_JS, "text/javascript; charset=utf-8")),
        _ => None,
    }
}

/// Serves a static asset (cached an hour), or 404.
pub fn static_response(file: &str) -> Response {
    match static_asset(file) {
        Some((body, mime)) => (
            [
                (header::CONTENT_TYPE, mime),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

/// Security headers for every page: no framing (clickjacking on the login form), no sniffing,
/// no referrer (which may hold codes) sent to other sites.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' https: http:; img-src 'self' data: https: http:; \
                   frame-ancestors 'none'; base-uri 'none'";

/// The `.html` files of a templates directory that replace none of the embedded templates (a
/// misspelt name would otherwise be ignored without a word).
pub fn unknown_templates(dir: &std::path::Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut unknown: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".html") && !EMBEDDED.iter().any(|(name, _)| name == n))
        .collect();
    unknown.sort();
    unknown
}

pub struct Pages {
    env: Environment<'static>,
    globals: Value,
}

impl Pages {
    /// `static_url` ends with `/`. Templates in `frontend.templates_dir` replace the embedded ones
    /// of the same name.
    pub fn new(frontend: &Frontend, issuer: &str, static_url: String) -> Result<Self, String> {
        if let Some(dir) = &frontend.templates_dir
            && !dir.is_dir()
        {
            return Err(format!(
                "spec.frontend.templatesDir: {} is not a directory",
                dir.display()
            ));
        }
        let mut env = Environment::new();
        for (name, source) in EMBEDDED {
            let source = match &frontend.templates_dir {
                Some(dir) if dir.join(name).is_file() => read(&dir.join(name))?,
                _ => source.to_owned(),
            };
            env.add_template_owned(name, source)
                .map_err(|e| format!("template {name}: {e}"))?;
        }
        let globals = context! {
            product_name => frontend.product_name.clone().unwrap_or_else(|| "Keygate".into()),
            logo_url => frontend.logo_url.clone(),
            extra_css_url => frontend.extra_css_url.clone(),
            static_url => static_url,
            issuer => issuer,
        };
        Ok(Self { env, globals })
    }

    /// Renders a page; a template error is logged and becomes a plain 500 (an operator's broken
    /// template must not leak its details to users).
    pub fn render(&self, status: StatusCode, name: &str, ctx: Value) -> Response {
        let rendered = self
            .env
            .get_template(name)
            .and_then(|t| t.render(context! { ..ctx, ..self.globals.clone() }));
        match rendered {
            Ok(body) => html(status, body),
            Err(e) => {
                tracing::error!(template = name, error = %e, "template failed to render");
                html(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "<!DOCTYPE html><title>Error</title><p>Internal error.</p>".into(),
                )
            }
        }
    }

    /// An error page with a button (e.g. "Start again").
    pub fn error_with_action(
        &self,
        status: StatusCode,
        title: &str,
        message: &str,
        action_url: &str,
        action_label: &str,
    ) -> Response {
        self.render(
            status,
            "error.html",
            context! { status => status.as_u16(), title, message, action_url, action_label },
        )
    }

    pub fn error(
        &self,
        status: StatusCode,
        title: &str,
        message: &str,
        hint: Option<&str>,
    ) -> Response {
        self.render(
            status,
            "error.html",
            context! { status => status.as_u16(), title, message, hint },
        )
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn html(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    resp
}
