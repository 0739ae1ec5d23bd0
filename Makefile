# Makefile - a thin wrapper over tests/dev.sh (which installs what is missing, then uses meson).
.PHONY: all demo check bench clean
all:
	bash tests/dev.sh build
demo:
	bash tests/dev.sh demo
check:
	bash tests/dev.sh check
bench:
	bash tests/dev.sh bench
clean:
	rm -rf build build-release
