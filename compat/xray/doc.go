// Package compat runs real X-Ray clients against the control plane's X-Ray
// API. It is a module of its own so that the AWS SDK stays out of the main
// module's requirements; its tests are all there is. The X-Ray SDK for
// Node.js runs from js/ (npm packages that scripts/install-deps installs).
package compat
