//! What a request path asks for. Only `/mcp/{category}` is proxied, and only for configured
//! category names (checked by the caller against the snapshot), so no client path can reach a
//! backend path other than the category's MCP endpoint.

#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/health`: answered by the proxy itself.
    Health,
    /// `/stats`: answered by the proxy itself.
    Stats,
    /// `/mcp/{category}`, with the raw query (if any) to pass on.
    Mcp {
        category: &'a str,
        query: Option<&'a str>,
    },
    NotFound,
}

pub fn parse<'a>(path: &'a str, query: Option<&'a str>) -> Route<'a> {
    match path {
        "/health" => Route::Health,
        "/stats" => Route::Stats,
        _ => match path.strip_prefix("/mcp/") {
            // Anything with a further slash, an escape or an odd byte cannot be a configured
            // name; it is left to the snapshot lookup to refuse, never rewritten.
            Some(category) if !category.is_empty() && !category.contains('/') => {
                Route::Mcp { category, query }
            }
            _ => Route::NotFound,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(parse("/health", None), Route::Health);
        assert_eq!(parse("/stats", None), Route::Stats);
        assert_eq!(
            parse("/mcp/database", Some("a=1")),
            Route::Mcp {
                category: "database",
                query: Some("a=1")
            }
        );
        for bad in [
            "/mcp/",
            "/mcp",
            "/mcp/a/b",
            "/mcp/../etc",
            "/",
            "/mcp/a/",
            "/other",
        ] {
            assert_eq!(parse(bad, None), Route::NotFound, "{bad}");
        }
    }
}
