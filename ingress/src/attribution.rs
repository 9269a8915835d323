//! Who a request is for: the end user and the tags a caller attributes it
//! to, read from the request and validated before anything is queued.
//!
//! Invariants:
//! - One rule for every endpoint: a header wins over the body. `x-aigw-user`
//!   over OpenAI's `user` field; `x-aigw-tags` over `metadata.tags`. The
//!   header is what a platform in front of an application sets, so it may
//!   override what the application wrote; the body is never rewritten (the
//!   `user` field still reaches the provider as sent).
//! - Tags come as one comma-separated string wherever they are given (in
//!   `metadata.tags` too: OpenAI's metadata values are strings). Blank items
//!   are ignored, the rest are deduplicated in order; at most
//!   [`Attribution::MAX_TAGS`] distinct tags, each 1 to
//!   [`Attribution::MAX_TAG_LEN`] characters of `[A-Za-z0-9._:/-]`.
//! - The user is 1 to [`MAX_USER_LEN`] bytes of plain text.
//! - Anything else is a 400 naming the header or field in `param`.

use aigw_events::Attribution;
use axum::http::HeaderMap;
use serde_json::Value;

use crate::error::ApiError;
use crate::validate::{self, MAX_USER_LEN, invalid};

/// Header naming the end user (wins over the body's `user`).
pub const USER_HEADER: &str = "x-aigw-user";
/// Header with comma-separated tags (wins over `metadata.tags`).
pub const TAGS_HEADER: &str = "x-aigw-tags";

/// A tag's characters: letters, digits and `._:/-`.
pub fn tag_rule(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.chars().count() <= Attribution::MAX_TAG_LEN
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:/-".contains(c));
    ok.then_some(()).ok_or_else(|| {
        format!(
            "be 1 to {} characters of letters, digits, '.', '_', ':', '/' or '-'",
            Attribution::MAX_TAG_LEN
        )
    })
}

/// An end user id: 1 to [`MAX_USER_LEN`] bytes without control characters.
pub fn user_rule(user: &str) -> Result<(), String> {
    if user.is_empty() {
        return Err(format!("be 1 to {MAX_USER_LEN} bytes"));
    }
    validate::plain_text(user, MAX_USER_LEN)
}

/// Splits and checks a comma-separated tag list given as `param`.
pub fn parse_tags(list: &str, param: &'static str) -> Result<Vec<String>, ApiError> {
    let mut tags: Vec<String> = Vec::new();
    for tag in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        tag_rule(tag)
            .map_err(|why| invalid(format!("Each tag in '{param}' must {why}."), param))?;
        if !tags.iter().any(|t| t == tag) {
            tags.push(tag.to_string());
        }
        if tags.len() > Attribution::MAX_TAGS {
            return Err(invalid(
                format!(
                    "'{param}' may hold at most {} distinct tags.",
                    Attribution::MAX_TAGS
                ),
                param,
            ));
        }
    }
    Ok(tags)
}

fn header<'h>(headers: &'h HeaderMap, name: &'static str) -> Result<Option<&'h str>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| invalid(format!("'{name}' must be visible ASCII characters."), name)),
    }
}

/// The attribution of a request: `user` is the body's `user` field (already
/// checked by the body's validation) and `metadata_tags` its
/// `metadata.tags`, if any; headers win over both.
pub fn resolve(
    headers: &HeaderMap,
    user: Option<&str>,
    metadata_tags: Option<&Value>,
) -> Result<Attribution, ApiError> {
    let user = match header(headers, USER_HEADER)? {
        Some(u) => {
            let u = u.trim();
            validate::check(USER_HEADER, u, user_rule)?;
            Some(u.to_string())
        }
        None => user.filter(|u| !u.is_empty()).map(str::to_string),
    };
    let tags = match header(headers, TAGS_HEADER)? {
        Some(list) => parse_tags(list, TAGS_HEADER)?,
        None => match metadata_tags {
            None | Some(Value::Null) => vec![],
            Some(Value::String(list)) => parse_tags(list, "metadata.tags")?,
            Some(_) => {
                return Err(invalid(
                    "'metadata.tags' must be a comma-separated string.",
                    "metadata.tags",
                ));
            }
        },
    };
    Ok(Attribution { user, tags })
}

/// [`resolve`] for an OpenAI JSON body: its `user` and `metadata.tags`.
pub fn of_body(headers: &HeaderMap, body: &Value) -> Result<Attribution, ApiError> {
    resolve(
        headers,
        body.get("user").and_then(Value::as_str),
        body.get("metadata").and_then(|m| m.get("tags")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use serde_json::json;

    fn param_of(e: ApiError) -> Option<&'static str> {
        match e {
            ApiError::BadRequest { param, .. } => param,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn headers_win_over_the_body() {
        let body = json!({"user": "body-user", "metadata": {"tags": "a, b,a,,"}});
        let none = HeaderMap::new();
        let a = of_body(&none, &body).unwrap();
        assert_eq!(a.user.as_deref(), Some("body-user"));
        assert_eq!(a.tags, ["a", "b"]);
        let mut headers = HeaderMap::new();
        headers.insert(USER_HEADER, HeaderValue::from_static("hdr-user"));
        headers.insert(TAGS_HEADER, HeaderValue::from_static("env:prod,team/x"));
        let a = of_body(&headers, &body).unwrap();
        assert_eq!(a.user.as_deref(), Some("hdr-user"));
        assert_eq!(a.tags, ["env:prod", "team/x"]);
        assert!(of_body(&none, &json!({})).unwrap().is_empty());
    }

    #[test]
    fn bad_tags_are_refused_with_their_param() {
        let nine = (1..=9)
            .map(|i| format!("t{i}"))
            .collect::<Vec<_>>()
            .join(",");
        let body = json!({"metadata": {"tags": nine}});
        let e = of_body(&HeaderMap::new(), &body).unwrap_err();
        assert_eq!(param_of(e), Some("metadata.tags"));
        // Eight distinct tags (with repeats) are fine.
        let eight = "a,b,c,d,e,f,g,h,a,b";
        assert_eq!(parse_tags(eight, TAGS_HEADER).unwrap().len(), 8);
        for bad in ["a b", "x;y", &"t".repeat(65), "é"] {
            let e = parse_tags(bad, TAGS_HEADER).unwrap_err();
            assert_eq!(param_of(e), Some(TAGS_HEADER), "{bad}");
        }
        assert!(parse_tags(&"t".repeat(64), TAGS_HEADER).is_ok());
        let e = of_body(&HeaderMap::new(), &json!({"metadata": {"tags": ["a"]}})).unwrap_err();
        assert_eq!(param_of(e), Some("metadata.tags"));
    }

    #[test]
    fn bad_users_are_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(
            USER_HEADER,
            HeaderValue::from_str(&"u".repeat(MAX_USER_LEN + 1)).unwrap(),
        );
        let e = of_body(&headers, &json!({})).unwrap_err();
        assert_eq!(param_of(e), Some(USER_HEADER));
        headers.insert(USER_HEADER, HeaderValue::from_static(""));
        assert!(of_body(&headers, &json!({})).is_err());
    }
}
