# The tools are pinned in a module of their own, out of the main module's
# requirements.
TOOL = go tool -modfile=tools/go.mod

.PHONY: generate lint test
generate:
	$(TOOL) buf format -w
	$(TOOL) buf generate
lint:
	bash .ci/lint
test:
	bash scripts/test
