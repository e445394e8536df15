//! Escaping: every string a page prints comes from outside (job ids, node
//! names, failure reasons, audit entries) and must never become markup.

/// The one HTML escaping of Veil's pages, shared with the job report.
pub use veil_report::escape;

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn markup_and_quotes_are_escaped() {
        assert_eq!(
            escape(r#"<script>alert('x')</script> & "q""#),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(escape("plain-name_1.2"), "plain-name_1.2");
    }
}
