<?php
// The fixture application's boot: a container, the pgsql connection, Eloquent, events, the
// database queue and the bus, from the autoloaders Debian's php-laravel-framework installs
// (Illuminate/autoload.php on PHP's include path). No composer, no framework skeleton.
//
// Configuration comes from the environment, with Laravel's .env names:
//   DB_HOST DB_PORT DB_DATABASE DB_USERNAME DB_PASSWORD   the PostgreSQL connection
//   QUEUE_CONNECTION                                        database (default) | sync
//   RESYNC_OBSERVER=1                                       register the old observer
//   RESYNC_JOB_LOCK_TIMEOUT                                 the old job's lock_timeout (5s)

declare(strict_types=1);

// Laravel 8 predates PHP 8.2's deprecations (dynamic properties and the like).
error_reporting(E_ALL & ~E_DEPRECATED & ~E_USER_DEPRECATED);
ini_set('display_errors', 'stderr');

require_once 'Illuminate/autoload.php';

spl_autoload_register(function (string $class): void {
    if (strncmp($class, 'App\\', 4) === 0) {
        $file = __DIR__ . '/app/' . str_replace('\\', '/', substr($class, 4)) . '.php';
        if (is_file($file)) {
            require $file;
        }
    }
});

use App\Models\CourseUnitElement;
use App\Observers\CourseUnitElementObserver;
use Illuminate\Bus\Dispatcher as BusDispatcher;
use Illuminate\Config\Repository;
use Illuminate\Container\Container;
use Illuminate\Contracts\Bus\Dispatcher as BusDispatcherContract;
use Illuminate\Contracts\Bus\QueueingDispatcher;
use Illuminate\Contracts\Container\Container as ContainerContract;
use Illuminate\Contracts\Debug\ExceptionHandler;
use Illuminate\Contracts\Events\Dispatcher as EventsContract;
use Illuminate\Database\Capsule\Manager as Capsule;
use Illuminate\Events\Dispatcher;
use Illuminate\Queue\QueueServiceProvider;
use Illuminate\Support\DateFactory;
use Illuminate\Support\Facades\Facade;

/** What `php artisan` would print for an exception: the worker reports, nothing renders. */
final class FixtureExceptionHandler implements ExceptionHandler
{
    /** @var list<string> */
    public array $reported = [];

    public function report(Throwable $e): void
    {
        $this->reported[] = get_class($e) . ': ' . $e->getMessage();
    }

    public function shouldReport(Throwable $e): bool
    {
        return true;
    }

    public function render($request, Throwable $e)
    {
        throw $e;
    }

    public function renderForConsole($output, Throwable $e): void
    {
        fwrite(STDERR, (string) $e . PHP_EOL);
    }
}

function fixture_env(string $name, string $default): string
{
    $value = getenv($name);
    return $value === false || $value === '' ? $default : $value;
}

function boot_fixture_app(): Container
{
    $app = new Container();
    Container::setInstance($app);
    $app->instance(ContainerContract::class, $app);

    $app->instance('config', new Repository([
        'app' => ['timezone' => 'UTC'],
        'database' => [
            'default' => 'pgsql',
            'connections' => [
                'pgsql' => [
                    'driver' => 'pgsql',
                    'host' => fixture_env('DB_HOST', '127.0.0.1'),
                    'port' => fixture_env('DB_PORT', '5432'),
                    'database' => fixture_env('DB_DATABASE', 'laravel'),
                    'username' => fixture_env('DB_USERNAME', 'postgres'),
                    'password' => fixture_env('DB_PASSWORD', ''),
                    'charset' => 'utf8',
                    'prefix' => '',
                    'schema' => 'public',
                    'sslmode' => 'prefer',
                ],
            ],
        ],
        // config/queue.php of a Laravel 8 application, database driver.
        'queue' => [
            'default' => fixture_env('QUEUE_CONNECTION', 'database'),
            'connections' => [
                'sync' => ['driver' => 'sync'],
                'database' => [
                    'driver' => 'database',
                    'table' => 'jobs',
                    'queue' => 'default',
                    'retry_after' => 90,
                    'after_commit' => false,
                ],
            ],
            'failed' => [
                'driver' => 'database-uuids',
                'database' => 'pgsql',
                'table' => 'failed_jobs',
            ],
        ],
        'resync' => [
            'job_lock_timeout' => fixture_env('RESYNC_JOB_LOCK_TIMEOUT', '5s'),
        ],
    ]));
    date_default_timezone_set('UTC');

    $events = new Dispatcher($app);
    $app->instance('events', $events);
    $app->instance(EventsContract::class, $events);

    $capsule = new Capsule($app);
    $capsule->addConnection($app['config']['database.connections.pgsql']);
    $capsule->getDatabaseManager()->setDefaultConnection('pgsql');
    $capsule->setEventDispatcher($events);
    $capsule->setAsGlobal();
    $capsule->bootEloquent();
    $app->instance('db', $capsule->getDatabaseManager());
    $app->singleton('date', fn () => new DateFactory());
    $app->singleton(ExceptionHandler::class, fn () => new FixtureExceptionHandler());

    Facade::clearResolvedInstances();
    Facade::setFacadeApplication($app);

    (new QueueServiceProvider($app))->register();

    $app->singleton(BusDispatcher::class, fn ($app) => new BusDispatcher(
        $app,
        fn ($connection = null) => $app['queue']->connection($connection)
    ));
    $app->alias(BusDispatcher::class, BusDispatcherContract::class);
    $app->alias(BusDispatcher::class, QueueingDispatcher::class);

    if (fixture_env('RESYNC_OBSERVER', '0') === '1') {
        CourseUnitElement::observe(CourseUnitElementObserver::class);
    }
    return $app;
}
