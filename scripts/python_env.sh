# Sourced by the GPU check scripts: sets PY to the Python that runs the project and puts the
# repository on PYTHONPATH. PY, if set, wins; else .venv/bin/python (pip install -e '.[dev]');
# else python3 (a GPU machine whose python3 already holds torch and Lightning but nothing can be
# installed from the network), after installing the wheels found in .whl/ into /tmp/site:
# hydra-core, omegaconf, antlr4-python3-runtime and POT, fetched beforehand with
# `pip download --no-deps --only-binary=:all: --python-version <its python> ...`.
if [ -z "${PY:-}" ]; then
    if [ -x .venv/bin/python ]; then
        PY=.venv/bin/python
    else
        PY=python3
        if compgen -G ".whl/*.whl" > /dev/null; then
            "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
                || { echo "installing .whl/ failed"; exit 1; }
            export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
        fi
    fi
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
