//! What an HTML page links to and contains, read once with a real HTML parser (html5ever, as
//! browsers parse) so malformed markup is understood the way a browser would.
//!
//! The parsed document is not `Send`, so it never outlives [`Page::parse`]: the page keeps owned
//! facts only, and the scan can hold it across an await.

use scraper::{ElementRef, Html};
use url::Url;

/// Most links and most resources kept from one page.
pub const MAX_LINKS: usize = 1000;

/// The facts of one HTML page the crawl and the checks need.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page {
    /// The `<title>` text, whitespace collapsed.
    pub title: Option<String>,
    /// The text of each `<h1>`.
    pub headings: Vec<String>,
    /// `a` and `area` hrefs, `iframe` and `frame` srcs, resolved against the page (or its
    /// `<base href>`); links that do not resolve are dropped.
    pub links: Vec<Url>,
    pub forms: Vec<Form>,
    /// `<input type=password>` anywhere on the page.
    pub password_fields: usize,
    /// What the page makes the browser load by itself.
    pub resources: Vec<Resource>,
}

/// One `<form>`: the crawl fetches a GET form's action (without fields); the checks look at
/// where a password would go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Form {
    /// The method is GET (the default): fetching its action sends nothing the user typed.
    pub get: bool,
    /// Where it submits (the page itself when the action is missing or empty); `None` when the
    /// action does not resolve.
    pub action: Option<Url>,
    /// It holds an `<input type=password>`.
    pub password: bool,
}

/// A resource a page loads without a click.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resource {
    pub kind: ResourceKind,
    pub url: Url,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceKind {
    Script,
    Frame,
    Image,
    Stylesheet,
}

impl ResourceKind {
    /// The element as evidence shows it.
    pub fn element(self) -> &'static str {
        match self {
            ResourceKind::Script => "script",
            ResourceKind::Frame => "iframe",
            ResourceKind::Image => "img",
            ResourceKind::Stylesheet => "stylesheet",
        }
    }
}

impl Page {
    /// Parses `html` served at `url`.
    pub fn parse(html: &str, url: &Url) -> Page {
        let document = Html::parse_document(html);
        let elements = || document.tree.nodes().filter_map(ElementRef::wrap);
        let base = elements()
            .find(|e| e.value().name() == "base" && e.attr("href").is_some())
            .and_then(|e| url.join(e.attr("href")?.trim()).ok())
            .unwrap_or_else(|| url.clone());
        let resolve = |raw: Option<&str>| raw.and_then(|r| base.join(r.trim()).ok());
        let mut page = Page::default();
        for e in elements() {
            let attr = |name: &str| e.attr(name);
            match e.value().name() {
                "title" if page.title.is_none() => page.title = Some(text(e)),
                "h1" => page.headings.push(text(e)),
                "a" | "area" => page.links.extend(resolve(attr("href"))),
                "iframe" | "frame" => {
                    if let Some(src) = resolve(attr("src")) {
                        page.links.push(src.clone());
                        page.resources.push(Resource { kind: ResourceKind::Frame, url: src });
                    }
                }
                "script" => page.resources.extend(
                    resolve(attr("src")).map(|url| Resource { kind: ResourceKind::Script, url }),
                ),
                "img" => page.resources.extend(
                    resolve(attr("src")).map(|url| Resource { kind: ResourceKind::Image, url }),
                ),
                "link" if is_stylesheet(attr("rel")) => page.resources.extend(
                    resolve(attr("href"))
                        .map(|url| Resource { kind: ResourceKind::Stylesheet, url }),
                ),
                "input" if is_password(e) => page.password_fields += 1,
                "form" => page.forms.push(Form {
                    get: attr("method").is_none_or(|m| m.trim().eq_ignore_ascii_case("get")),
                    action: match attr("action").map(str::trim) {
                        None | Some("") => Some(url.clone()),
                        Some(action) => base.join(action).ok(),
                    },
                    password: e.descendent_elements().any(is_password),
                }),
                _ => {}
            }
        }
        page.links.truncate(MAX_LINKS);
        page.resources.truncate(MAX_LINKS);
        page
    }

    /// The URLs the crawl may follow: the links, and the actions of GET forms (fetched without
    /// their fields: a form is never submitted).
    pub fn followable(&self) -> impl Iterator<Item = Url> + '_ {
        let actions = self.forms.iter().filter(|f| f.get).filter_map(|f| f.action.clone());
        self.links.iter().cloned().chain(actions)
    }
}

fn is_password(e: ElementRef<'_>) -> bool {
    e.value().name() == "input"
        && e.attr("type").is_some_and(|t| t.trim().eq_ignore_ascii_case("password"))
}

fn is_stylesheet(rel: Option<&str>) -> bool {
    rel.is_some_and(|r| r.split_ascii_whitespace().any(|t| t.eq_ignore_ascii_case("stylesheet")))
}

/// The element's text, whitespace collapsed.
fn text(e: ElementRef<'_>) -> String {
    e.text().flat_map(str::split_whitespace).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn links_forms_and_resources_resolve_against_the_page() {
        let html = r#"<!doctype html><html><head><title> Intranet
            home </title><link rel="Stylesheet" href="/s.css"><link rel="icon" href="/i.png">
            <script src="http://cdn.example/x.js"></script><script>inline()</script></head>
            <body><h1>Welcome</h1><a href="a?x=1#f">A</a><a>no href</a>
            <a href="mailto:it@example.com">mail</a><area href="/map"><iframe src="/frame"></iframe>
            <img src="//img.example/p.png"><a href="http://[bad">bad</a>
            <form action="/search"><input name=q></form>
            <form method="POST" action="/login"><input type="PASSWORD" name=p></form>
            <form method=post><input type=text></form></body></html>"#;
        let page = Page::parse(html, &u("https://app/dir/page"));
        assert_eq!(page.title.as_deref(), Some("Intranet home"));
        assert_eq!(page.headings, ["Welcome"]);
        let links: Vec<&str> = page.links.iter().map(Url::as_str).collect();
        assert_eq!(
            links,
            [
                "https://app/dir/a?x=1#f",
                "mailto:it@example.com",
                "https://app/map",
                "https://app/frame"
            ]
        );
        assert_eq!(page.password_fields, 1);
        assert_eq!(
            page.forms,
            [
                Form { get: true, action: Some(u("https://app/search")), password: false },
                Form { get: false, action: Some(u("https://app/login")), password: true },
                Form { get: false, action: Some(u("https://app/dir/page")), password: false },
            ]
        );
        let kinds: Vec<(ResourceKind, &str)> =
            page.resources.iter().map(|r| (r.kind, r.url.as_str())).collect();
        assert_eq!(
            kinds,
            [
                (ResourceKind::Stylesheet, "https://app/s.css"),
                (ResourceKind::Script, "http://cdn.example/x.js"),
                (ResourceKind::Frame, "https://app/frame"),
                (ResourceKind::Image, "https://img.example/p.png"),
            ]
        );
        let follow: Vec<String> = page.followable().map(String::from).collect();
        assert_eq!(follow.last().map(String::as_str), Some("https://app/search"));
        assert_eq!(follow.len(), 5, "links and the one GET form, never the POST ones");
    }

    #[test]
    fn base_href_and_malformed_markup() {
        let page = Page::parse(
            "<base href='http://other/root/'><a href=x>x<a href=/y>y<p><input type=password><p",
            &u("http://app/"),
        );
        let links: Vec<&str> = page.links.iter().map(Url::as_str).collect();
        assert_eq!(links, ["http://other/root/x", "http://other/y"]);
        assert_eq!(page.password_fields, 1);
        assert_eq!(Page::parse("", &u("http://app/")), Page::default());
        assert_eq!(Page::parse("\0<<<>>>\u{feff}", &u("http://app/")).links.len(), 0);
    }

    #[test]
    fn a_page_of_many_links_keeps_a_bounded_number() {
        let html: String = (0..5000).map(|i| format!("<a href=/p{i}>{i}</a>")).collect();
        assert_eq!(Page::parse(&html, &u("http://app/")).links.len(), MAX_LINKS);
    }
}
