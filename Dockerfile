# syntax=docker/dockerfile:1
# Remixer training image: remixer-* programs built with the CUDA backend, Open MPI, and an
# SSH server set up for the Kubeflow MPI Operator with a non-root user.
#
#   docker build -t REGISTRY/remixer:TAG .          (from the repository root)
#
# The target `lambda` is another image, the inference service for AWS Lambda (below, and
# deploy/README.md).
#
# Two stages: the CUDA "devel" image (nvcc, cuBLAS and NCCL headers) builds, the CUDA
# "runtime" image (cuBLAS, NCCL, no compiler) runs. Both are Ubuntu 22.04, whose Open MPI
# is 4.1: the MPI Operator's OMPI_MCA_orte_* settings are for Open MPI 4. Runtime library
# package names below are those of Ubuntu 22.04; a different base needs them revised.

ARG CUDA_VERSION=12.4.1
ARG UBUNTU_VERSION=22.04

# ---------------------------------------------------------------------------------------
# AWS Lambda container image of the inference service (deploy/README.md), a target of its
# own, CPU only (Lambda has no GPU); the stages come first so that a plain `docker build .`
# still ends at the training image. deploy/package-lambda.sh builds remixer-lambda on
# Debian 12 and gathers it with every library it needs, glibc included, and the checkpoint;
# the image puts that package on the provided:al2023 base image:
#
#   docker build --target lambda --build-context checkpoint=runs/diffusion \
#       --build-arg LAMBDA_CHECKPOINT=ckpt-00400000.h5 -t remixer-lambda .
#
# (checkpoints are not in the build context: .dockerignore leaves out *.h5)
FROM debian:12 AS lambda-build
ENV DEBIAN_FRONTEND=noninteractive
# scripts/setup-deps.sh's build dependencies, and those of the service and its Lambda runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        build-essential cmake pkg-config \
        libopenmpi-dev openmpi-bin \
        libhdf5-dev libyaml-dev libsndfile1-dev libsoxr-dev libfftw3-dev \
        libopenblas-dev libpng-dev librandom123-dev \
        libmicrohttpd-dev libjansson-dev libcurl4-openssl-dev libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
ARG LAMBDA_CHECKPOINT=model.h5
RUN --mount=type=bind,from=checkpoint,target=/checkpoint \
    deploy/package-lambda.sh build-lambda "/checkpoint/${LAMBDA_CHECKPOINT}" /out/lambda

FROM public.ecr.aws/lambda/provided:al2023 AS lambda
# The package in LAMBDA_TASK_ROOT (/var/task), its bootstrap also where the base image's
# entry point starts the runtime (/var/runtime/bootstrap); the handler name is not used.
COPY --from=lambda-build /out/lambda/ ${LAMBDA_TASK_ROOT}/
COPY --from=lambda-build /out/lambda/bootstrap ${LAMBDA_RUNTIME_DIR}/bootstrap
CMD ["remixer.handler"]

# ---------------------------------------------------------------------------------------
FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu${UBUNTU_VERSION} AS build

# GPU architectures compiled for: A100 (80), A10/RTX 30 (86), L4/L40 (89), H100/H200 (90).
ARG CUDA_ARCHITECTURES="80;86;89;90"

ENV DEBIAN_FRONTEND=noninteractive
# The build dependencies of scripts/setup-deps.sh.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        build-essential cmake pkg-config \
        libopenmpi-dev openmpi-bin \
        libhdf5-dev libyaml-dev libsndfile1-dev libsoxr-dev libfftw3-dev \
        libopenblas-dev libpng-dev librandom123-dev \
        libmicrohttpd-dev libjansson-dev libcurl4-openssl-dev libssl-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DREMIXER_CUDA=ON \
        -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHITECTURES}" \
    && cmake --build build -j"$(nproc)"
# Every remixer-* program the build produced goes to /usr/local/bin; the trainer and the
# data preparation tool must be among them.
RUN mkdir -p /out/bin \
    && find build -type f -name 'remixer-*' -perm -u+x -exec install -m 0755 {} /out/bin/ \; \
    && test -x /out/bin/remixer-train \
    && test -x /out/bin/remixer-prep

# ---------------------------------------------------------------------------------------
FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu${UBUNTU_VERSION} AS runtime

# The user the pods run as (the manifests' runAsUser and sshAuthMountPath follow these),
# and the port of its SSH server (the workers' readiness probe checks it).
ARG REMIXER_USER=remixer
ARG REMIXER_UID=1000
ARG SSH_PORT=2222

ENV DEBIAN_FRONTEND=noninteractive
# Shared libraries of the programs (cuBLAS and NCCL come with the base image), Open MPI's
# mpirun and orted, OpenSSH for mpirun to start orted on the workers, procps for the
# workers' preStop hook.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        openmpi-bin libopenmpi3 \
        libhdf5-103-1 libyaml-0-2 libsndfile1 libsoxr0 libfftw3-single3 \
        libopenblas0 libpng16-16 libgomp1 \
        libmicrohttpd12 libjansson4 libcurl4 libssl3 \
        openssh-server openssh-client procps \
    && rm -rf /var/lib/apt/lists/*

# The non-root user, uid = gid = REMIXER_UID (a base image's user of that id gives way).
# Its password is '*' (no password) rather than '!' (locked): an sshd able to read
# /etc/shadow refuses key logins to a locked account.
RUN if getent passwd "${REMIXER_UID}" >/dev/null; then \
        userdel --remove "$(getent passwd "${REMIXER_UID}" | cut -d: -f1)"; \
    fi \
    && if getent group "${REMIXER_UID}" >/dev/null; then \
        groupdel "$(getent group "${REMIXER_UID}" | cut -d: -f1)"; \
    fi \
    && groupadd --gid "${REMIXER_UID}" "${REMIXER_USER}" \
    && useradd --create-home --uid "${REMIXER_UID}" --gid "${REMIXER_UID}" --shell /bin/bash \
        "${REMIXER_USER}" \
    && usermod --password '*' "${REMIXER_USER}"

# SSH as the MPI Operator uses it. The operator mounts a Secret with id_rsa, id_rsa.pub
# and authorized_keys at spec.sshAuthMountPath (the manifests set /home/remixer/.ssh), the
# same key pair in every pod, owned by root and read-only.
# - Client (launcher): connect to port SSH_PORT; host keys are not known in advance and the
#   mounted .ssh is read-only, so do not check or record them.
# - Server (workers): runs as the user itself, hence a port above 1024, a pid file in its
#   home, the mounted private key as host key, and StrictModes off because the mounted
#   files belong to root. Only the user can log in (sshd without root cannot switch users).
RUN mkdir -p /run/sshd \
    && printf '%s\n' \
        'Host *' \
        "    Port ${SSH_PORT}" \
        '    StrictHostKeyChecking no' \
        '    UserKnownHostsFile /dev/null' \
        '    LogLevel ERROR' \
        > /etc/ssh/ssh_config.d/10-remixer-mpi.conf \
    && printf '%s\n' \
        "Port ${SSH_PORT}" \
        "HostKey /home/${REMIXER_USER}/.ssh/id_rsa" \
        "PidFile /home/${REMIXER_USER}/.sshd.pid" \
        "AuthorizedKeysFile /home/${REMIXER_USER}/.ssh/authorized_keys" \
        'StrictModes no' \
        'PubkeyAuthentication yes' \
        'PasswordAuthentication no' \
        'KbdInteractiveAuthentication no' \
        'UsePAM no' \
        'X11Forwarding no' \
        'AllowTcpForwarding no' \
        'PrintMotd no' \
        > /etc/ssh/sshd_config_remixer \
    && chmod 0644 /etc/ssh/sshd_config_remixer /etc/ssh/ssh_config.d/10-remixer-mpi.conf

COPY --from=build /out/bin/ /usr/local/bin/
COPY configs/ /opt/remixer/configs/
COPY scripts/ /opt/remixer/scripts/
RUN chmod 0755 /opt/remixer/scripts/*.sh

# Relative paths in configs resolve against the current directory: configs/vqvae.yaml
# works from here as it does from the repository root.
WORKDIR /opt/remixer
USER ${REMIXER_UID}:${REMIXER_UID}
ENV HOME=/home/${REMIXER_USER}
EXPOSE ${SSH_PORT}
CMD ["remixer-train", "--help"]
