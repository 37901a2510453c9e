"""Refuse a trick chosen for a task it does not apply to. Plain `cookiecutter` runs this hook; `tricks new`
checks the same rule in generator/options.py before it renders. cookiecutter.json's `_tasks` holds the
catalogue's tricks that apply to some tasks only (a test keeps it equal to generator/tricks.py)."""

import sys

{% for trick, tasks in cookiecutter._tasks.items() %}
if {{ cookiecutter[trick] }} and "{{ cookiecutter.task }}" not in {{ tasks | tojson }}:
    sys.exit("error: {{ trick }} does not apply to task {{ cookiecutter.task }}: choose task {{ tasks | join(' or ') }}")
{% endfor %}
