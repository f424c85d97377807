# The tools are pinned in a module of their own, out of the main module's
# requirements, and run with scripts/tool (go.work rules out go tool -modfile).

.PHONY: generate lint test
generate:
	bash scripts/tool buf format -w
	find gen -name '*.pb.go' -delete
	bash scripts/tool buf generate
lint:
	bash .ci/lint
test:
	bash scripts/test
