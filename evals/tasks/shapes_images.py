"""Images of the shapes_gen task: a row's ``image`` path, relative to its data directory.

A template: grades.evaluate.render_tasks replaces the data-dir placeholder below when it
renders the task for one prepared dataset."""

from PIL import Image

DATA_DIR = "@DATA_DIR@"


def doc_to_image(doc):
    with Image.open(f"{DATA_DIR}/{doc['image']}") as im:
        return [im.convert("RGB")]
