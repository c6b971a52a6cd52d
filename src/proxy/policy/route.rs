//! What a request path asks for. Only `/mcp/{category}` is proxied, and only for configured
//! category names (checked by the caller against the snapshot), so no client path can reach a
//! backend path other than the category's MCP endpoint.

#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/health`: answered by the proxy itself.
    Health,
    /// `/stats`: answered by the proxy itself.
    Stats,
    /// RFC 9728 Protected Resource Metadata: of the proxy (`None`), or of a category's endpoint
    /// (`/.well-known/oauth-protected-resource/mcp/{category}`).
    ResourceMetadata(Option<&'a str>),
    /// `/mcp/{category}`, with the raw query (if any) to pass on.
    Mcp {
        category: &'a str,
        query: Option<&'a str>,
    },
    NotFound,
}

/// Where RFC 9728 puts the metadata of a resource at `path` (inserted before the path).
pub const RESOURCE_METADATA: &str = "/.well-known/oauth-protected-resource";

/// The metadata URL of a category's endpoint, for `resource_metadata` in a challenge.
pub fn resource_metadata_url(audience: &str, category: &str) -> String {
    let base = crate::auth::well_known(audience, RESOURCE_METADATA);
    format!("{base}/mcp/{category}")
}

pub fn parse<'a>(path: &'a str, query: Option<&'a str>) -> Route<'a> {
    if let Some(rest) = path.strip_prefix(RESOURCE_METADATA) {
        return match rest {
            "" => Route::ResourceMetadata(None),
            _ => match rest.strip_prefix("/mcp/") {
                Some(c) if !c.is_empty() && !c.contains('/') => Route::ResourceMetadata(Some(c)),
                _ => Route::NotFound,
            },
        };
    }
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
            parse("/.well-known/oauth-protected-resource", None),
            Route::ResourceMetadata(None)
        );
        assert_eq!(
            parse("/.well-known/oauth-protected-resource/mcp/db", None),
            Route::ResourceMetadata(Some("db"))
        );
        assert_eq!(
            resource_metadata_url("https://mcp.example.com/", "db"),
            "https://mcp.example.com/.well-known/oauth-protected-resource/mcp/db"
        );
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
