// Package openapi serves the API's OpenAPI 3.1 document at GET
// /api/v1/openapi.json, in the standalone server and in the sessions
// function (the cluster's HTTPRoute sends the path there).
//
// openapi.json is maintained by hand next to the route tables; tests check
// it both ways against them (cmd/machineserver), validate it structurally
// (this package) and validate the README walkthrough's requests and answers
// against it (e2e). The CloudEvents payload schemas of events/schemas are
// not copied into it: Document bundles them under components/schemas as
// events.<file name>, rewriting their $refs to JSON pointers into the one
// document, so every reference resolves without fetching anything.
package openapi
