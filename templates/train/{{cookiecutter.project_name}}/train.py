{% include cookiecutter.task ~ "/train.py.j2" %}
