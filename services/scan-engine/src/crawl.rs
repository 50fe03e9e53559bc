//! The crawl frontier: which URL to fetch next, and which found URLs are worth fetching at all.
//!
//! No I/O and no clock: the scan loop feeds it what it found and asks it for the next visit, so
//! scope, depth, the page limit and "never the same URL twice" are tested here without sockets.

use std::collections::{HashSet, VecDeque};
use url::Url;

/// Most redirects followed from one link (browsers allow about 20; an internal app that needs
/// more than 5 is looping).
pub const MAX_REDIRECTS: u32 = 5;
/// Most distinct URLs remembered; past it new links are dropped (an app generating endless
/// unique links cannot grow the frontier without bound).
pub const MAX_SEEN: usize = 100_000;

/// One URL to fetch, and how it was reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Visit {
    pub url: Url,
    /// Links followed from a target (0 for the targets themselves; a redirect keeps its
    /// source's depth).
    pub depth: u32,
    /// Redirects followed to get here.
    pub hops: u32,
}

/// What became of a redirect's `Location`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Redirect {
    /// It is the next visit.
    Follow,
    /// Another origin than the targets', or not http(s).
    OutOfScope,
    /// Already fetched or queued.
    Seen,
    /// [`MAX_REDIRECTS`] hops already.
    TooManyHops,
}

/// The crawl's state: queue, seen URLs, counters and limits.
#[derive(Debug)]
pub struct Frontier {
    /// The targets' origins (scheme, host, port): the scope.
    origins: Vec<url::Origin>,
    /// Breadth first, so the page limit keeps the pages nearest the targets.
    queue: VecDeque<Visit>,
    seen: HashSet<String>,
    max_pages: u32,
    max_depth: u32,
    pages: u32,
    requests: u32,
    /// A backstop on requests that produce no page (failures, redirects).
    request_budget: u32,
}

impl Frontier {
    /// A frontier holding the targets at depth 0 (each once; non-http targets are dropped).
    pub fn new(targets: &[Url], max_pages: u32, max_depth: u32) -> Frontier {
        let mut frontier = Frontier {
            origins: Vec::new(),
            queue: VecDeque::new(),
            seen: HashSet::new(),
            max_pages,
            max_depth,
            pages: 0,
            requests: 0,
            request_budget: max_pages
                .saturating_mul(4)
                .saturating_add(crate::plan::MAX_TARGETS as u32),
        };
        for target in targets.iter().filter_map(|t| normalise(t.clone())) {
            if !frontier.origins.contains(&target.origin()) {
                frontier.origins.push(target.origin());
            }
            if frontier.seen.insert(target.to_string()) {
                frontier.queue.push_back(Visit { url: target, depth: 0, hops: 0 });
            }
        }
        frontier
    }

    /// The next URL to request, counted as a request; `None` once the queue is empty or the page
    /// limit (or the request backstop) is reached.
    pub fn next_visit(&mut self) -> Option<Visit> {
        if self.pages >= self.max_pages || self.requests >= self.request_budget {
            return None;
        }
        let visit = self.queue.pop_front()?;
        self.requests += 1;
        Some(visit)
    }

    /// `visit` produced a page (any response but a redirect) linking to `links`: it counts
    /// towards the page limit, and the links within scope, depth and not seen yet are queued.
    pub fn page_fetched(&mut self, visit: &Visit, links: impl IntoIterator<Item = Url>) {
        self.pages += 1;
        if visit.depth >= self.max_depth {
            return;
        }
        for link in links {
            if let Some(url) = self.admit(link) {
                self.queue.push_back(Visit { url, depth: visit.depth + 1, hops: 0 });
            }
        }
    }

    /// `visit` answered with a redirect to `to` (already resolved against the visit's URL):
    /// followed next when in scope, not seen and within [`MAX_REDIRECTS`].
    pub fn redirected(&mut self, visit: &Visit, to: Url) -> Redirect {
        if visit.hops >= MAX_REDIRECTS {
            return Redirect::TooManyHops;
        }
        let Some(url) = normalise(to).filter(|u| self.in_scope(u)) else {
            return Redirect::OutOfScope;
        };
        if !self.remember(&url) {
            return Redirect::Seen;
        }
        self.queue.push_front(Visit { url, depth: visit.depth, hops: visit.hops + 1 });
        Redirect::Follow
    }

    /// Whether `url` has the origin of one of the targets.
    pub fn in_scope(&self, url: &Url) -> bool {
        self.origins.contains(&url.origin())
    }

    /// Responses other than redirects so far.
    pub fn pages(&self) -> u32 {
        self.pages
    }

    /// Requests handed out so far.
    pub fn requests(&self) -> u32 {
        self.requests
    }

    fn admit(&mut self, link: Url) -> Option<Url> {
        let url = normalise(link).filter(|u| self.in_scope(u))?;
        self.remember(&url).then_some(url)
    }

    /// Records `url` as seen; false when it was seen before or the memory is full.
    fn remember(&mut self, url: &Url) -> bool {
        self.seen.len() < MAX_SEEN && self.seen.insert(url.to_string())
    }
}

/// The form of `url` the crawl compares and fetches: http(s) only (`mailto:`, `javascript:` and
/// the like are not fetched), no fragment (it never reaches the server), no user name or
/// password, no empty `?`. The url crate has already lowercased the host, dropped the default
/// port and resolved dot segments.
pub fn normalise(mut url: Url) -> Option<Url> {
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return None;
    }
    url.set_fragment(None);
    if url.query() == Some("") {
        url.set_query(None);
    }
    if !url.username().is_empty() || url.password().is_some() {
        url.set_username("").ok()?;
        url.set_password(None).ok()?;
    }
    Some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    fn drain(f: &mut Frontier) -> Vec<String> {
        std::iter::from_fn(|| f.next_visit()).map(|v| v.url.to_string()).collect()
    }

    #[test]
    fn normalising_drops_fragments_credentials_and_other_schemes() {
        assert_eq!(normalise(u("HTTP://Intranet:80/a/../b?#top")), Some(u("http://intranet/b")));
        assert_eq!(normalise(u("https://u:p@h/x#y")), Some(u("https://h/x")));
        assert_eq!(normalise(u("mailto:it@example.com")), None);
        assert_eq!(normalise(u("javascript:void(0)")), None);
        assert_eq!(normalise(u("ftp://h/")), None);
    }

    #[test]
    fn only_the_targets_origins_are_in_scope() {
        let f = Frontier::new(&[u("http://app:8080/start"), u("https://app/")], 10, 5);
        assert!(f.in_scope(&u("http://app:8080/other?q=1")));
        assert!(f.in_scope(&u("https://app:443/x")));
        assert!(!f.in_scope(&u("http://app/")), "another port");
        assert!(!f.in_scope(&u("https://app:8080/")), "another scheme");
        assert!(!f.in_scope(&u("http://www.example.com/")));
    }

    #[test]
    fn links_are_queued_once_breadth_first_within_depth() {
        let mut f = Frontier::new(&[u("http://a/"), u("http://a/#dup")], 100, 2);
        let root = f.next_visit().unwrap();
        assert_eq!((root.url.as_str(), root.depth), ("http://a/", 0));
        assert_eq!(f.next_visit(), None, "the duplicate target is queued once");
        f.page_fetched(
            &root,
            [
                u("http://a/1"),
                u("http://a/1#frag"),
                u("http://a/"),
                u("http://b/"),
                u("mailto:x@a"),
                u("http://a/2"),
            ],
        );
        let one = f.next_visit().unwrap();
        assert_eq!((one.url.as_str(), one.depth), ("http://a/1", 1));
        f.page_fetched(&one, [u("http://a/1/deeper")]);
        let two = f.next_visit().unwrap();
        assert_eq!(two.url.as_str(), "http://a/2");
        f.page_fetched(&two, []);
        let deeper = f.next_visit().unwrap();
        assert_eq!((deeper.url.as_str(), deeper.depth), ("http://a/1/deeper", 2));
        f.page_fetched(&deeper, [u("http://a/1/deeper/still")]);
        assert_eq!(drain(&mut f), Vec::<String>::new(), "depth 3 is beyond the limit");
        assert_eq!((f.pages(), f.requests()), (4, 4));
    }

    #[test]
    fn the_page_limit_stops_the_crawl_exactly() {
        let mut f = Frontier::new(&[u("http://a/")], 3, 5);
        let root = f.next_visit().unwrap();
        f.page_fetched(&root, (1..10).map(|i| u(&format!("http://a/{i}"))));
        let mut fetched = 1;
        while let Some(v) = f.next_visit() {
            f.page_fetched(&v, []);
            fetched += 1;
        }
        assert_eq!((fetched, f.pages()), (3, 3));
    }

    #[test]
    fn redirects_are_followed_next_in_scope_and_at_most_five_hops() {
        let mut f = Frontier::new(&[u("http://a/")], 100, 5);
        let root = f.next_visit().unwrap();
        f.page_fetched(&root, [u("http://a/x"), u("http://a/y")]);
        let x = f.next_visit().unwrap();
        assert_eq!(f.redirected(&x, u("http://a/moved")), Redirect::Follow);
        let moved = f.next_visit().unwrap();
        assert_eq!((moved.url.as_str(), moved.depth, moved.hops), ("http://a/moved", 1, 1));
        assert_eq!(f.redirected(&moved, u("http://a/y")), Redirect::Seen);
        assert_eq!(f.redirected(&moved, u("http://elsewhere/")), Redirect::OutOfScope);
        let mut hop = moved;
        for i in 0..4 {
            assert_eq!(f.redirected(&hop, u(&format!("http://a/r{i}"))), Redirect::Follow);
            hop = f.next_visit().unwrap();
        }
        assert_eq!(hop.hops, 5);
        assert_eq!(f.redirected(&hop, u("http://a/r9")), Redirect::TooManyHops);
        assert_eq!(f.next_visit().unwrap().url.as_str(), "http://a/y");
        assert_eq!(f.pages(), 1, "redirects are requests, not pages");
        assert_eq!(f.requests(), 8);
    }

    #[test]
    fn requests_without_pages_are_bounded() {
        let mut f = Frontier::new(&[u("http://a/")], 1, 5);
        let root = f.next_visit().unwrap();
        let mut hop = root;
        let mut requests = 1;
        // Unreachable URLs produce no page; only the backstop ends an endless supply of them.
        for i in 0.. {
            f.queue.push_back(Visit { url: u(&format!("http://a/{i}")), depth: 1, hops: 0 });
            match f.next_visit() {
                Some(v) => hop = v,
                None => break,
            }
            requests += 1;
        }
        assert_eq!(requests, 4 + crate::plan::MAX_TARGETS as u32);
        assert_eq!(hop.depth, 1);
    }
}
