//! The web dashboard at `/`: a page, its JavaScript modules and a stylesheet (`dashboard/`),
//! compiled into the binary with `include_bytes!`, so a host serves it with nothing installed
//! beside it and no CDN. The page is plain HTML and ES modules with no build step (`app.js`
//! imports the others by relative URL; each is listed in [`ASSETS`]); it reads and acts only
//! through the JSON API of this module's siblings (`/api/...`), with the token the operator
//! types in (kept in the tab's `sessionStorage`), so it can do nothing a `curl` could not. The
//! modules are `// @ts-check` with JSDoc types of the API's shapes; `dashboard/tsconfig.json`
//! (not served) is how `scripts/test.sh` type-checks them.
//!
//! The assets are routes of the same router as the API, behind the same auth middleware: on a
//! loopback server they are answered only for a loopback `Host` and `Origin`, like any request
//! without the token. On a non-loopback server (which always has a token) they are served
//! without it ([`is_asset`]): a browser cannot attach a bearer token to a page load, and the
//! assets hold no data; every call the page makes then needs the token.
//!
//! Every answer carries a strict Content-Security-Policy (`default-src 'self'`, no inline
//! script or style, no framing), `nosniff`, and `Cache-Control: no-cache` with an `ETag` of
//! the content: browsers revalidate on each load and get a `304` until the binary changes.

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

/// One embedded file and the path it is served at.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

/// A JavaScript module of the page, served at `/dashboard/<file>`: `index.html` loads `app.js`,
/// which imports the others by relative URL.
macro_rules! module {
    ($file:literal) => {
        Asset {
            path: concat!("/dashboard/", $file),
            content_type: JAVASCRIPT,
            body: include_bytes!(concat!("dashboard/", $file)),
        }
    };
}

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

static ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("dashboard/index.html"),
    },
    Asset {
        path: "/dashboard/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("dashboard/app.css"),
    },
    Asset {
        path: "/dashboard/favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("dashboard/favicon.svg"),
    },
    module!("app.js"),
    module!("api.js"),
    module!("chart.js"),
    module!("chrome.js"),
    module!("clock.js"),
    module!("dom.js"),
    module!("durations.js"),
    module!("format.js"),
    module!("poll.js"),
    module!("throughput.js"),
    module!("timeline.js"),
    module!("token.js"),
    module!("views/handlers.js"),
    module!("views/job.js"),
    module!("views/not-found.js"),
    module!("views/overview.js"),
    module!("views/queue.js"),
    module!("views/schedules.js"),
];

/// The policy of every dashboard answer: only this origin's script, style and API; images
/// from this origin or drawn by the page; no plugins, no `<base>`, never inside a frame.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Whether `path` is one of the dashboard's static files (which hold no data).
pub(crate) fn is_asset(path: &str) -> bool {
    ASSETS.iter().any(|asset| asset.path == path)
}

/// The dashboard's routes (GET and HEAD of each asset), to merge into the API router.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        let etag = etag(asset.body);
        router.route(
            asset.path,
            get(move |headers: HeaderMap| async move { serve(asset, &etag, &headers) }),
        )
    })
}

/// A strong validator: the first 16 bytes of the content's SHA-256, hex, quoted.
fn etag(body: &[u8]) -> String {
    let digest = Sha256::digest(body);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

fn serve(asset: &Asset, etag: &str, request: &HeaderMap) -> Response {
    let unchanged = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asset(path: &str) -> Option<&'static Asset> {
        ASSETS.iter().find(|asset| asset.path == path)
    }

    fn text(asset: &Asset) -> &'static str {
        std::str::from_utf8(asset.body).unwrap_or_default()
    }

    /// The URL path a module's relative import `specifier` names, from the module at `from`.
    fn resolve(from: &str, specifier: &str) -> String {
        let mut parts: Vec<&str> = from.split('/').collect();
        parts.pop();
        for step in specifier.split('/') {
            match step {
                "." => {}
                ".." => {
                    parts.pop();
                }
                name => parts.push(name),
            }
        }
        parts.join("/")
    }

    /// The specifiers of a module's static imports (`import ... from '<specifier>';` or
    /// `import '<specifier>';`, over one line or several).
    fn imports(module: &str) -> Vec<&str> {
        module
            .split("\nimport ")
            .skip(1)
            .filter_map(|statement| {
                let statement = statement.split(';').next()?;
                let quoted = statement
                    .rsplit_once(" from ")
                    .map_or(statement, |(_, q)| q);
                quoted.trim().strip_prefix('\'')?.strip_suffix('\'')
            })
            .collect()
    }

    #[test]
    fn the_page_loads_only_embedded_assets() {
        let page = text(&ASSETS[0]);
        // The modules but the entry point are named by the modules that import them.
        let named = ASSETS[1..]
            .iter()
            .filter(|a| a.content_type != JAVASCRIPT || a.path == "/dashboard/app.js");
        for asset in named {
            assert!(page.contains(asset.path), "index.html names {}", asset.path);
        }
        assert!(page.contains(r#"<script type="module" src="/dashboard/app.js">"#));
        // Nothing from elsewhere, and nothing inline that the policy would block.
        for refused in ["http:", "https:", "<style", " style=", "<script>"] {
            assert!(!page.contains(refused), "index.html holds {refused:?}");
        }
        let inline_handler = page.split(" on").skip(1).any(|rest| {
            let name_len = rest.bytes().take_while(u8::is_ascii_lowercase).count();
            name_len > 0 && rest.as_bytes().get(name_len) == Some(&b'=')
        });
        assert!(!inline_handler, "index.html holds an inline event handler");
    }

    /// The served modules a module imports, by URL path.
    fn module_imports(path: &str) -> Vec<String> {
        let module = asset(path).unwrap_or_else(|| panic!("{path} is imported but not served"));
        assert_eq!(module.content_type, JAVASCRIPT, "{path}");
        imports(text(module))
            .into_iter()
            .map(|specifier| {
                assert!(
                    specifier.starts_with("./") || specifier.starts_with("../"),
                    "{path} imports {specifier:?}: only this origin's modules, by relative URL"
                );
                resolve(path, specifier)
            })
            .collect()
    }

    #[test]
    fn app_js_imports_every_module_served_and_no_module_imports_itself_back() {
        // Depth-first from the entry point, with the chain of imports that led to each module.
        let mut done: Vec<String> = Vec::new();
        let mut chain = vec![("/dashboard/app.js".to_string(), 0)];
        while let Some((path, next)) = chain.last().cloned() {
            let imported = module_imports(&path);
            let Some(target) = imported.get(next) else {
                done.push(path);
                chain.pop();
                continue;
            };
            if let Some(last) = chain.last_mut() {
                last.1 += 1;
            }
            assert!(
                !chain.iter().any(|(p, _)| p == target),
                "an import cycle: {chain:?} then {target}"
            );
            if !done.contains(target) {
                chain.push((target.clone(), 0));
            }
        }
        // Every module served is reached: none is left over from an earlier layout.
        for served in ASSETS.iter().filter(|a| a.content_type == JAVASCRIPT) {
            assert!(
                done.iter().any(|p| p == served.path),
                "nothing imports {}",
                served.path
            );
        }
    }

    #[test]
    fn every_script_in_the_dashboard_folder_is_served() {
        let folder = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api/dashboard");
        let mut scripts = Vec::new();
        for dir in [folder.clone(), folder.join("views")] {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "js") {
                    scripts.push(path);
                }
            }
        }
        assert!(scripts.len() > 10, "{scripts:?}");
        for script in scripts {
            let relative = script.strip_prefix(&folder).unwrap().to_string_lossy();
            let served = asset(&format!("/dashboard/{relative}"))
                .unwrap_or_else(|| panic!("{relative} is not in ASSETS"));
            assert_eq!(served.body, std::fs::read(&script).unwrap(), "{relative}");
            assert!(
                text(served).starts_with("// @ts-check\n"),
                "{relative} opens with // @ts-check"
            );
        }
    }

    #[test]
    fn etags_follow_the_content() {
        assert_eq!(etag(b"a"), etag(b"a"));
        assert_ne!(etag(b"a"), etag(b"b"));
        assert_eq!(etag(b"").len(), 34);
    }
}
