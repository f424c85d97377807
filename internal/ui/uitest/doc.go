// Package uitest tests the dashboard (internal/ui) in a real headless
// Chromium driven through chromedp: a module of its own, so that chromedp
// stays out of the main module's requirements. It starts the real binary
// (controlplane serve, embedded store) on loopback, makes rules and a budget
// through gRPC, sends SDK reports, and checks what the page shows, saving
// screenshots.
package uitest
