//! Conditional requests (RFC 9110 §13) for GET/HEAD of a video: evaluates If-Match,
//! If-Unmodified-Since, If-None-Match and If-Modified-Since in the §13.2.2 order against the
//! representation's strong ETag and Last-Modified, and decides whether If-Range lets a Range
//! header apply. Entity-tag lists are parsed here; dates come from `super::date`.

use std::time::SystemTime;

use super::date::{parse_http_date, truncate_to_second};
use super::request::{Method, RequestHead};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Serve the request normally (Range handling is up to the caller).
    Proceed,
    /// 304 Not Modified.
    NotModified,
    /// 412 Precondition Failed.
    Failed,
}

/// One entity-tag: `W/"x"` or `"x"`; `opaque` is the text between the quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EntityTag<'a> {
    weak: bool,
    opaque: &'a str,
}

impl EntityTag<'_> {
    fn strong_eq(&self, other: &EntityTag<'_>) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }

    fn weak_eq(&self, other: &EntityTag<'_>) -> bool {
        self.opaque == other.opaque
    }
}

/// An If-Match / If-None-Match field value.
enum TagList<'a> {
    Any,
    Tags(Vec<EntityTag<'a>>),
}

/// Parse one entity-tag at the start of `s`; returns it and the rest of `s`.
fn parse_entity_tag(s: &str) -> Option<(EntityTag<'_>, &str)> {
    let (weak, quoted) = match s.strip_prefix("W/") {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let inner = quoted.strip_prefix('"')?;
    let end = inner.find('"')?;
    let opaque = inner.get(..end)?;
    // etagc = %x21 / %x23-7E / obs-text
    if !opaque
        .bytes()
        .all(|b| b == 0x21 || (0x23..=0x7E).contains(&b) || b >= 0x80)
    {
        return None;
    }
    Some((EntityTag { weak, opaque }, inner.get(end + 1..)?))
}

/// `*` or a comma-separated list of entity-tags (empty elements tolerated). None if malformed.
fn parse_tag_list(value: &str) -> Option<TagList<'_>> {
    let value = value.trim_matches([' ', '\t']);
    if value == "*" {
        return Some(TagList::Any);
    }
    let mut tags = Vec::new();
    let mut rest = value;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            break;
        }
        let (tag, after) = parse_entity_tag(rest)?;
        tags.push(tag);
        let after = after.trim_start_matches([' ', '\t']);
        if !after.is_empty() && !after.starts_with(',') {
            return None;
        }
        rest = after;
    }
    if tags.is_empty() {
        return None;
    }
    Some(TagList::Tags(tags))
}

/// The representation's own tag; an unparseable one matches nothing.
fn own_tag(etag: &str) -> Option<EntityTag<'_>> {
    let (tag, rest) = parse_entity_tag(etag.trim())?;
    rest.is_empty().then_some(tag)
}

/// If-Match: true when it matches (strong comparison). A malformed list matches nothing.
fn if_match_passes(value: &str, etag: Option<&EntityTag<'_>>) -> bool {
    match parse_tag_list(value) {
        Some(TagList::Any) => true,
        Some(TagList::Tags(tags)) => etag.is_some_and(|own| tags.iter().any(|t| t.strong_eq(own))),
        None => false,
    }
}

/// If-None-Match: true when some tag matches (weak comparison), i.e. the condition is false.
/// A malformed list matches nothing.
fn if_none_match_matches(value: &str, etag: Option<&EntityTag<'_>>) -> bool {
    match parse_tag_list(value) {
        Some(TagList::Any) => true,
        Some(TagList::Tags(tags)) => etag.is_some_and(|own| tags.iter().any(|t| t.weak_eq(own))),
        None => false,
    }
}

/// Evaluate If-Match, If-Unmodified-Since, If-None-Match and If-Modified-Since in RFC 9110
/// §13.2.2 order for a GET/HEAD of a representation with strong `etag` (quoted, e.g.
/// "\"abc\"") and `last_modified` (compared at second precision). If-None-Match uses weak
/// comparison and makes If-Modified-Since ignored; `*` matches (the representation exists).
/// Invalid dates are ignored as §13.1.3/§13.1.4 require. For a method other than GET/HEAD a
/// matching If-None-Match is Failed (412), and If-Modified-Since is ignored.
pub fn evaluate_preconditions(
    head: &RequestHead,
    etag: &str,
    last_modified: SystemTime,
) -> Precondition {
    let own = own_tag(etag);
    let last_modified = truncate_to_second(last_modified);
    let is_get_or_head = matches!(head.method, Method::Get | Method::Head);

    // Step 1 / 2.
    if let Some(if_match) = &head.if_match {
        if !if_match_passes(if_match, own.as_ref()) {
            return Precondition::Failed;
        }
    } else if let Some(date) = head
        .if_unmodified_since
        .as_deref()
        .and_then(parse_http_date)
        && last_modified > date
    {
        return Precondition::Failed;
    }

    // Step 3 / 4.
    if let Some(if_none_match) = &head.if_none_match {
        if if_none_match_matches(if_none_match, own.as_ref()) {
            return if is_get_or_head {
                Precondition::NotModified
            } else {
                Precondition::Failed
            };
        }
    } else if is_get_or_head
        && let Some(date) = head.if_modified_since.as_deref().and_then(parse_http_date)
        && last_modified <= date
    {
        return Precondition::NotModified;
    }

    Precondition::Proceed
}

/// If-Range: true when the Range header should be honoured: value is an entity-tag that
/// strongly matches etag (weak tags never match), or an HTTP-date exactly equal to
/// last_modified (second precision). Anything else (including garbage) → false, so the full
/// representation is sent.
pub fn if_range_allows(if_range: &str, etag: &str, last_modified: SystemTime) -> bool {
    let value = if_range.trim_matches([' ', '\t']);
    if value.starts_with('"') || value.starts_with("W/") {
        let Some((tag, rest)) = parse_entity_tag(value) else {
            return false;
        };
        return rest.is_empty() && own_tag(etag).is_some_and(|own| tag.strong_eq(&own));
    }
    parse_http_date(value).is_some_and(|date| date == truncate_to_second(last_modified))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    const ETAG: &str = "\"v1-abc\"";
    const LM_SECONDS: u64 = 784_111_777; // Sun, 06 Nov 1994 08:49:37 GMT
    const LM: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
    const BEFORE: &str = "Sun, 06 Nov 1994 08:49:36 GMT";
    const AFTER: &str = "Sun, 06 Nov 1994 08:49:38 GMT";

    /// Last-Modified with a sub-second part, as a file mtime would have.
    fn last_modified() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(LM_SECONDS) + Duration::from_millis(420)
    }

    fn get() -> RequestHead {
        RequestHead {
            method: Method::Get,
            ..RequestHead::default()
        }
    }

    fn eval(head: &RequestHead) -> Precondition {
        evaluate_preconditions(head, ETAG, last_modified())
    }

    fn with(f: impl FnOnce(&mut RequestHead)) -> Precondition {
        let mut head = get();
        f(&mut head);
        eval(&head)
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_string())
    }

    #[test]
    fn no_conditions_proceed() {
        assert_eq!(eval(&get()), Precondition::Proceed);
    }

    #[test]
    fn if_match_strong_comparison() {
        assert_eq!(with(|h| h.if_match = s(ETAG)), Precondition::Proceed);
        assert_eq!(with(|h| h.if_match = s("*")), Precondition::Proceed);
        assert_eq!(
            with(|h| h.if_match = s("\"x\", \"v1-abc\"")),
            Precondition::Proceed
        );
        assert_eq!(with(|h| h.if_match = s("\"x\"")), Precondition::Failed);
        assert_eq!(
            with(|h| h.if_match = s("W/\"v1-abc\"")),
            Precondition::Failed
        );
        assert_eq!(with(|h| h.if_match = s("v1-abc")), Precondition::Failed);
        assert_eq!(with(|h| h.if_match = s("\"v1-abc")), Precondition::Failed);
    }

    #[test]
    fn if_match_overrides_if_unmodified_since() {
        // If-Match passes → If-Unmodified-Since is not evaluated.
        assert_eq!(
            with(|h| {
                h.if_match = s(ETAG);
                h.if_unmodified_since = s(BEFORE);
            }),
            Precondition::Proceed
        );
    }

    #[test]
    fn if_unmodified_since() {
        assert_eq!(
            with(|h| h.if_unmodified_since = s(LM)),
            Precondition::Proceed
        );
        assert_eq!(
            with(|h| h.if_unmodified_since = s(AFTER)),
            Precondition::Proceed
        );
        assert_eq!(
            with(|h| h.if_unmodified_since = s(BEFORE)),
            Precondition::Failed
        );
        assert_eq!(
            with(|h| h.if_unmodified_since = s("garbage")),
            Precondition::Proceed
        );
    }

    #[test]
    fn if_none_match_weak_comparison() {
        assert_eq!(
            with(|h| h.if_none_match = s(ETAG)),
            Precondition::NotModified
        );
        assert_eq!(
            with(|h| h.if_none_match = s("W/\"v1-abc\"")),
            Precondition::NotModified
        );
        assert_eq!(
            with(|h| h.if_none_match = s("\"a\",W/\"v1-abc\"")),
            Precondition::NotModified
        );
        assert_eq!(
            with(|h| h.if_none_match = s("*")),
            Precondition::NotModified
        );
        assert_eq!(
            with(|h| h.if_none_match = s("\"other\"")),
            Precondition::Proceed
        );
        assert_eq!(
            with(|h| h.if_none_match = s("\"v1-ABC\"")),
            Precondition::Proceed
        );
        assert_eq!(
            with(|h| h.if_none_match = s("garbage")),
            Precondition::Proceed
        );
        let mut head = get();
        head.method = Method::Head;
        head.if_none_match = s(ETAG);
        assert_eq!(eval(&head), Precondition::NotModified);
    }

    #[test]
    fn if_none_match_on_other_methods_fails() {
        let mut head = get();
        head.method = Method::Put;
        head.if_none_match = s("*");
        assert_eq!(eval(&head), Precondition::Failed);
    }

    #[test]
    fn if_none_match_makes_if_modified_since_ignored() {
        assert_eq!(
            with(|h| {
                h.if_none_match = s("\"other\"");
                h.if_modified_since = s(AFTER);
            }),
            Precondition::Proceed
        );
    }

    #[test]
    fn if_modified_since() {
        assert_eq!(
            with(|h| h.if_modified_since = s(LM)),
            Precondition::NotModified
        );
        assert_eq!(
            with(|h| h.if_modified_since = s(AFTER)),
            Precondition::NotModified
        );
        assert_eq!(
            with(|h| h.if_modified_since = s(BEFORE)),
            Precondition::Proceed
        );
        assert_eq!(
            with(|h| h.if_modified_since = s("not a date")),
            Precondition::Proceed
        );
        assert_eq!(
            with(|h| h.if_modified_since = s("Sunday, 06-Nov-94 08:49:37 GMT")),
            Precondition::NotModified
        );
        let mut head = get();
        head.method = Method::Post;
        head.if_modified_since = s(AFTER);
        assert_eq!(eval(&head), Precondition::Proceed);
    }

    #[test]
    fn failed_if_match_wins_over_if_none_match() {
        assert_eq!(
            with(|h| {
                h.if_match = s("\"nope\"");
                h.if_none_match = s(ETAG);
            }),
            Precondition::Failed
        );
    }

    #[test]
    fn tag_list_parsing() {
        assert!(matches!(parse_tag_list(" * "), Some(TagList::Any)));
        assert!(
            matches!(parse_tag_list("\"a\" , , W/\"b\","), Some(TagList::Tags(t)) if t.len() == 2)
        );
        assert!(matches!(parse_tag_list("\"\""), Some(TagList::Tags(t)) if t[0].opaque.is_empty()));
        for bad in [
            "",
            ",",
            "\"a\" \"b\"",
            "\"a\"x",
            "w/\"a\"",
            "\"a b\"",
            "*, \"a\"",
        ] {
            assert!(parse_tag_list(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn if_range_with_entity_tags() {
        let lm = last_modified();
        assert!(if_range_allows(ETAG, ETAG, lm));
        assert!(if_range_allows(" \"v1-abc\" ", ETAG, lm));
        assert!(!if_range_allows("W/\"v1-abc\"", ETAG, lm));
        assert!(!if_range_allows("\"v1-abc\"", "W/\"v1-abc\"", lm));
        assert!(!if_range_allows("\"other\"", ETAG, lm));
        assert!(!if_range_allows("\"v1-abc\", \"x\"", ETAG, lm));
        assert!(!if_range_allows("\"v1-abc", ETAG, lm));
    }

    #[test]
    fn if_range_with_dates() {
        let lm = last_modified();
        assert!(if_range_allows(LM, ETAG, lm));
        assert!(if_range_allows("Sun Nov  6 08:49:37 1994", ETAG, lm));
        assert!(!if_range_allows(AFTER, ETAG, lm));
        assert!(!if_range_allows(BEFORE, ETAG, lm));
        assert!(!if_range_allows("", ETAG, lm));
        assert!(!if_range_allows("garbage", ETAG, lm));
    }
}
