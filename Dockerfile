# The project's Airflow image: the official Airflow 3.3.2 image plus the pinned requirements
# and the dunning-notify distribution (hooks, operators, include/ with the SQL, templates and
# simulators), so every worker on every machine imports the same code. docker-compose.yml
# builds it once and every Airflow service and the SMSC simulator run it.
#
#   docker build -t dunning-notify:3.3.2-python3.11 .
#
# constraints.txt is the tested, fully pinned set (see requirements.txt's header).
ARG AIRFLOW_BASE_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_BASE_IMAGE}

USER airflow
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Dependencies first: this layer is rebuilt only when the pins change.
COPY --chown=airflow:0 requirements.txt constraints.txt /opt/dunning/
RUN pip install -r /opt/dunning/requirements.txt -c /opt/dunning/constraints.txt

# Then the project itself (no dependencies: they are all pinned above).
COPY --chown=airflow:0 pyproject.toml README.md /opt/dunning/src/
COPY --chown=airflow:0 hooks /opt/dunning/src/hooks
COPY --chown=airflow:0 operators /opt/dunning/src/operators
COPY --chown=airflow:0 include /opt/dunning/src/include
RUN pip install --no-deps /opt/dunning/src \
    && python -c "import hooks, operators, include.sources.generate, include.simulators.smsc"

# DAGs are baked in so that workers on other machines need nothing but the image; mount
# ./dags over /opt/airflow/dags in a docker-compose.override.yml while developing.
COPY --chown=airflow:0 dags /opt/airflow/dags

# The staging mount point exists in the image, owned by airflow and group 0 (group-writable for
# any AIRFLOW_UID), so a fresh named volume mounted there inherits that ownership.
RUN mkdir -p /opt/airflow/staging && chmod g+rwx /opt/airflow/staging
