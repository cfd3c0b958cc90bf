//! W3C trace context as it travels between services: `traceparent` and `tracestate`.
//!
//! The values are carried verbatim (the telemetry crate parses and renders them); this
//! type only keeps the two together so every hop forwards both or neither.

/// The W3C trace context of a piece of work. Empty strings mean "not set".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceContext {
    /// `traceparent`: version, trace id, parent span id, flags.
    pub traceparent: String,
    /// `tracestate`: vendor entries, forwarded untouched.
    pub tracestate: String,
}

impl TraceContext {
    /// The context a client sent in its `traceparent` / `tracestate` headers.
    pub fn from_headers(traceparent: Option<&str>, tracestate: Option<&str>) -> TraceContext {
        TraceContext {
            traceparent: traceparent.unwrap_or_default().trim().to_owned(),
            tracestate: tracestate.unwrap_or_default().trim().to_owned(),
        }
    }

    /// The HTTP headers that carry this context to the next hop (only those that are set).
    pub fn headers(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("traceparent", self.traceparent.as_str()),
            ("tracestate", self.tracestate.as_str()),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
    }

    /// Whether no `traceparent` is set.
    pub fn is_empty(&self) -> bool {
        self.traceparent.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_skip_unset_values() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let only_parent = TraceContext::from_headers(Some(tp), None);
        assert_eq!(only_parent.headers().collect::<Vec<_>>(), vec![("traceparent", tp)]);
        let both = TraceContext::from_headers(Some(tp), Some(" vendor=a,other=b "));
        assert_eq!(
            both.headers().collect::<Vec<_>>(),
            vec![("traceparent", tp), ("tracestate", "vendor=a,other=b")]
        );
        assert!(TraceContext::default().is_empty());
        assert_eq!(TraceContext::default().headers().count(), 0);
    }
}
