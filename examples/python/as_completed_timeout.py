# The seed's second program on zexec: wait only 0.05 s for the first result. Every task sleeps
# longer than that (most likely), so as_completed() raises TimeoutError. Leaving the `with`
# block still waits for the tasks, as with ProcessPoolExecutor. Changed lines are marked.
#
#   PYTHONPATH=client-lib/python /usr/bin/python3 examples/python/as_completed_timeout.py
from time import sleep
from random import random
import zexec, zexec.worker  # changed: was `from concurrent.futures import ProcessPoolExecutor`
from concurrent.futures import as_completed


# custom task that will sleep for a variable amount of time
def task(name):
    # sleep for less than a second, times ten
    value = random()
    sleep(value * 10)
    return f'Task={name}: {value:.2f}'


# entry point
if __name__ == '__main__':
    # start the process pool
    with zexec.Executor(workers=10, worker_command=zexec.worker.command(__file__, 'task')) as executor:  # changed
        # submit tasks and collect futures
        futures = [executor.submit('task', i) for i in range(10)]  # changed: the task by name
        # handle a timeout waiting for the first result
        try:
            # process task results as they are available
            for future in as_completed(futures, timeout=0.05):
                # retrieve the result
                print(future.result())
        except TimeoutError:
            print('Timed out waiting for a result')
