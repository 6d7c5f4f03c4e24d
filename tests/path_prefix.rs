//! `[server] path` moves the dashboard and the demo too, not only the Pusher and API routes: behind
//! a proxy that forwards only `/realtime/...` to Herald, a page at the bare path is unreachable,
//! and a page whose assets or API calls point at the bare path breaks.

mod common;

use common::*;

const PASSWORD: &str = "correct horse battery staple";

/// The `href="..."` and `src="..."` values of a page.
fn links(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attribute in ["href=\"", "src=\""] {
        for piece in html.split(attribute).skip(1) {
            if let Some((link, _)) = piece.split_once('"') {
                if !link.starts_with("http") {
                    out.push(link.to_owned());
                }
            }
        }
    }
    out
}

/// `link` resolved as a browser does against the page at `page` (an absolute path, no trailing `/`).
fn resolve(page: &str, link: &str) -> String {
    if link.starts_with('/') {
        return link.to_owned();
    }
    let dir = &page[..=page.rfind('/').unwrap_or(0)];
    format!("{dir}{link}")
}

async fn get(port: u16, path: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .basic_auth("any", Some(PASSWORD))
        .send()
        .await
        .expect("request");
    (response.status().as_u16(), response.text().await.unwrap_or_default())
}

#[tokio::test]
async fn the_dashboard_and_the_demo_live_under_the_path_prefix() {
    let server = format!("path = \"/realtime\"\ndashboard = true\ndashboard_password = \"{PASSWORD}\"\ndemo = true");
    let server = TestServer::start(&server, "").await;
    let port = server.port;

    for page in ["/realtime/dashboard", "/realtime/demo"] {
        let (status, html) = get(port, page).await;
        assert_eq!(status, 200, "{page}: {html}");
        let assets = links(&html);
        assert!(assets.len() >= 2, "{page} links its script and style: {assets:?}");
        for link in assets {
            let url = resolve(page, &link);
            assert!(url.starts_with("/realtime/"), "{page} links {link}, which a browser fetches at {url}");
            assert_eq!(get(port, &url).await.0, 200, "{page}: {url}");
        }
    }
    // What the pages call: the dashboard's JSON API and the demo's auth endpoint, under the prefix.
    let (status, apps) = get(port, "/realtime/dashboard/api/apps").await;
    assert_eq!(status, 200, "{apps}");
    assert!(apps.contains(APP_ID), "{apps}");
    let auth = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/realtime/demo/auth"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("socket_id=1.1&channel_name=presence-demo-chat&user_id=u1")
        .send()
        .await
        .expect("demo auth");
    assert_eq!(auth.status(), 200);
    // The scripts build those URLs from the page's own location, never from the bare path.
    let (_, dashboard_js) = get(port, "/realtime/dashboard/assets/dashboard.js").await;
    let (_, demo_js) = get(port, "/realtime/demo/assets/demo.js").await;
    for (name, script, bare) in [("dashboard.js", &dashboard_js, "/dashboard/"), ("demo.js", &demo_js, "/demo/")] {
        for quote in ['\'', '`', '"'] {
            assert!(!script.contains(&format!("{quote}{bare}")), "{name} calls an absolute {bare} URL");
        }
    }

    // The bare paths are gone, as for every other route.
    for bare in ["/dashboard", "/dashboard/api/apps", "/demo", "/demo/assets/demo.js"] {
        assert_eq!(get(port, bare).await.0, 404, "{bare}");
    }
}
