# softrdma in a container the way CI runs one: an unprivileged user, Docker's
# default seccomp profile (no userfaultfd: ODP regions use the fallback
# invalidation mode, which `softrdma devinfo -v` reports), no device, no
# capability, no --privileged. How to build and use it: docs/CONTAINERS.md.
#
#   docker build -t softrdma .
#   docker run --rm softrdma                      # softrdma run -- ibv_devinfo -v

# The one install command; softrdma carries its shims (ARCHITECTURE.md,
# "Installing").
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo install --locked --path soft-rdma --root /opt/softrdma

FROM debian:bookworm-slim
# Verbs programs to run on the device (the system's libibverbs.so.1 comes
# with them and stays; `softrdma run` puts its own first).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ibverbs-utils perftest rdmacm-utils \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/softrdma/bin/softrdma /usr/local/bin/softrdma
RUN useradd --create-home --uid 1000 rdma
USER rdma
WORKDIR /home/rdma
# Write the shims to the user's private cache once, in the image.
RUN softrdma run -- true
CMD ["softrdma", "run", "--", "ibv_devinfo", "-v"]
