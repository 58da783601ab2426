import click
@click.group()
def cli():
    """x"""
