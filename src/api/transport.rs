//! Where the API key may travel: the rule that a plain-`http://` base must be a
//! loopback address (decided from the URL alone, before any lookup or connection),
//! and the redirect policy of API calls (never https to http; reqwest itself drops
//! `Authorization` on any change of host, port or scheme).

use std::net::IpAddr;

use reqwest::{Url, redirect};

/// Redirects followed before giving up: enough for a CDN hop or two.
pub(super) const MAX_REDIRECTS: usize = 5;

/// A base URL the key must not be sent to.
#[derive(Debug, thiserror::Error)]
#[error(
    "{setting} `{shown}` is refused: plain http sends the api key in clear to every hop on the \
     way; use https, or a loopback address (127.0.0.1, ::1, localhost) for a local test server, \
     or pass --allow-insecure-http for a private test server you trust"
)]
pub struct InsecureBase {
    /// The flag (and environment variable) the URL came from.
    pub setting: &'static str,
    /// The URL without any user name or password in it.
    pub shown: String,
}

/// True when `url`'s host is a loopback address by its spelling alone: 127.0.0.0/8,
/// `::1` (also as `::ffff:127.x.x.x`) or `localhost`. No name is resolved: a name
/// that resolves to loopback does not count, since the answer could change.
pub fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    // An IPv6 host is bracketed in a URL.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(ip) => ip.to_canonical().is_loopback(),
        Err(_) => host.trim_end_matches('.').eq_ignore_ascii_case("localhost"),
    }
}

/// Refuses `url` when it is plain http to a host that is not loopback, unless
/// `allow_insecure_http`. `setting` names where the URL came from in the error.
pub fn check_base(
    url: &Url,
    setting: &'static str,
    allow_insecure_http: bool,
) -> Result<(), InsecureBase> {
    if url.scheme() != "http" || allow_insecure_http || is_loopback(url) {
        return Ok(());
    }
    let mut shown = url.clone();
    // A password in the URL is as secret as the key.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    Err(InsecureBase {
        setting,
        shown: shown.as_str().trim_end_matches('/').to_owned(),
    })
}

/// Why a redirect of an API call is not followed, if it is not.
pub(super) fn refuse_redirect(previous: &[Url], next: &Url) -> Option<String> {
    if previous.len() > MAX_REDIRECTS {
        return Some(format!("more than {MAX_REDIRECTS} redirects"));
    }
    // Once on https, a step down to http would expose the request (and on the
    // same host, reqwest would keep the key on it).
    if next.scheme() == "http" && previous.iter().any(|u| u.scheme() == "https") {
        return Some(format!(
            "refused a redirect from https to plain http ({})",
            next.origin().ascii_serialization()
        ));
    }
    None
}

/// The redirect policy of API calls: [`refuse_redirect`]'s rules, otherwise follow.
pub(super) fn api_redirects() -> redirect::Policy {
    redirect::Policy::custom(
        |attempt| match refuse_redirect(attempt.previous(), attempt.url()) {
            Some(why) => attempt.error(why),
            None => attempt.follow(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn loopback_http_is_accepted_and_anything_else_refused() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://127.9.8.7/",
            "http://[::1]:9/",
            "http://[::ffff:127.0.0.1]/",
            "http://localhost:3000",
            "http://LOCALHOST./x",
            "https://api.kie.ai",
            "https://10.0.0.1",
        ] {
            assert!(check_base(&url(ok), "--api-base", false).is_ok(), "{ok}");
        }
        for bad in [
            "http://api.kie.ai",
            "http://10.0.0.1:8080",
            "http://[::2]/",
            "http://localhost.example.com",
            "http://127.0.0.1.nip.io",
            "http://0.0.0.0:80",
        ] {
            let e = check_base(&url(bad), "--api-base", false).unwrap_err();
            assert!(e.to_string().starts_with("--api-base `"), "{e}");
            assert!(e.to_string().contains("in clear"), "{e}");
            // The explicit opt-in lets it through.
            assert!(check_base(&url(bad), "--api-base", true).is_ok(), "{bad}");
        }
    }

    #[test]
    fn a_password_in_a_refused_url_is_not_repeated() {
        let e = check_base(
            &url("http://me:hunter2@kie.example:81/v"),
            "--upload-base",
            false,
        )
        .unwrap_err();
        assert_eq!(e.shown, "http://kie.example:81/v");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }

    #[test]
    fn redirects_never_step_down_from_https() {
        let https = url("https://api.kie.ai/api/v1/veo/generate");
        let http = url("http://api.kie.ai/api/v1/veo/generate");
        let why = refuse_redirect(std::slice::from_ref(&https), &http).unwrap();
        assert!(why.contains("https to plain http"), "{why}");
        // Two hops later, still refused.
        let other = url("https://cdn.example/x");
        assert!(refuse_redirect(&[https.clone(), other], &http).is_some());
        // Up to https, or http to http on a test server, is followed.
        assert_eq!(refuse_redirect(std::slice::from_ref(&http), &https), None);
        let local = url("http://127.0.0.1:1/a");
        assert_eq!(refuse_redirect(std::slice::from_ref(&local), &local), None);
        let many = vec![https.clone(); MAX_REDIRECTS + 1];
        assert!(
            refuse_redirect(&many, &https)
                .unwrap()
                .contains("more than")
        );
    }
}
