.PHONY: generate lint test
generate:
	go tool buf format -w
	go tool buf generate
lint:
	bash .ci/lint
test:
	bash scripts/test
