//! The UI's pages, styles and script, embedded in the binary from `src/ui/assets/`:
//! no build step, and nothing loaded from anywhere but this server, which the
//! Content-Security-Policy enforces in the browser.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// Only this origin's scripts, styles, images and connections; no inline script, no
/// frames, forms only back to this server.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The single-page UI.
pub const INDEX: &str = include_str!("assets/index.html");
const LOGIN: &str = include_str!("assets/login.html");

/// Every asset: name, content type, bytes.
pub const FILES: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("assets/app.css"),
    ),
];

/// An HTML page.
pub fn page(html: &str) -> Response {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html.to_string(),
    )
        .into_response()
}

/// An asset by name.
pub fn file(name: &str) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, ty, body)) => (
            [
                (header::CONTENT_TYPE, *ty),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    }
}

/// Escapes text for HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The login page, with an error line when `error` is not empty.
pub fn login(error: &str) -> String {
    let line = if error.is_empty() {
        String::new()
    } else {
        format!("<p class=\"error\" role=\"alert\">{}</p>", escape(error))
    };
    LOGIN.replace("<!--error-->", &line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_load_nothing_from_elsewhere_and_no_inline_script() {
        for (name, text) in [("index.html", INDEX), ("login.html", LOGIN)]
            .into_iter()
            .chain(FILES.iter().map(|(n, _, b)| (*n, *b)))
        {
            for needle in ["http://", "https://", "//cdn", "@import", "url(http"] {
                // The SVG namespace is an identifier, never fetched.
                let count = text.matches(needle).count()
                    - text.matches("http://www.w3.org/2000/svg").count()
                        * (needle == "http://") as usize;
                assert_eq!(count, 0, "{name} mentions {needle}");
            }
        }
        assert!(!INDEX.contains("<script>") && !INDEX.contains("onclick"));
        assert!(INDEX.contains("src=\"/ui/assets/app.js\""));
    }

    #[test]
    fn the_login_error_is_escaped() {
        let page = login("<b>bad</b>");
        assert!(page.contains("&lt;b&gt;bad&lt;/b&gt;") && !page.contains("<b>bad"));
        assert!(page.contains("action=\"/ui/login\"") && page.contains("method=\"post\""));
    }
}
