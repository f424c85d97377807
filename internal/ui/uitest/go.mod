module github.com/tracesampling/controlplane/internal/ui/uitest

go 1.26.8

replace github.com/tracesampling/controlplane => ../../..

require (
	github.com/chromedp/chromedp v0.23.1
	github.com/tracesampling/controlplane/gen v0.0.0-00010101000000-000000000000
	google.golang.org/grpc v1.85.0
	google.golang.org/protobuf v1.36.13-0.20261016172727-e9ee2a76ab8e
)

require (
	github.com/chromedp/cdproto v0.160.1 // indirect
	github.com/go-json-experiment/json v0.0.0-20260213210345-44df1a37e875 // indirect
	golang.org/x/net v0.61.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
	golang.org/x/text v0.43.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20261104224025-d1e00e9f33ab // indirect
)

replace github.com/tracesampling/controlplane/gen => ../../../gen

replace github.com/tracesampling/controlplane/pkg => ../../../pkg

replace github.com/tracesampling/controlplane/clients/go => ../../../clients/go
